// The service's OpenAI-compatible API: the model list with each model's state, and chat answers
// streamed as server-sent events.

const STATES = ['ready', 'starting', 'offline'];

// An HTTP error answer (status 0: the connection failed or broke). retryAfter is in seconds or null.
export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function headers(apiKey) {
  const out = { 'Content-Type': 'application/json' };
  if (apiKey) out.Authorization = `Bearer ${apiKey}`;
  return out;
}

// Retry-After holds seconds or an HTTP date.
function retryAfterSeconds(value) {
  if (value === null) return null;
  if (/^\s*\d+\s*$/.test(value)) return parseInt(value, 10);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (typeof body?.error?.message === 'string') message = body.error.message;
  } catch {
    // Not an OpenAI error body: the status line says enough.
  }
  return new ApiError(response.status, message, retryAfterSeconds(response.headers.get('Retry-After')));
}

async function request(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'the service could not be reached');
  }
  if (!response.ok) throw await failure(response);
  return response;
}

// [{id, state}] of GET /v1/models; a model without a state is taken as ready.
export async function listModels(apiKey, signal) {
  const body = await (await request('/v1/models', { headers: headers(apiKey), signal })).json();
  if (!Array.isArray(body?.data)) throw new ApiError(200, 'the model list is malformed');
  return body.data.filter((m) => typeof m?.id === 'string')
    .map((m) => ({ id: m.id, state: STATES.includes(m.state) ? m.state : 'ready' }));
}

const stringOrUndefined = (value) => (typeof value === 'string' ? value : undefined);

// The pieces of one chat.completion.chunk delta, in the order a message shows them.
function* deltaPieces(delta) {
  const reasoning = stringOrUndefined(delta?.reasoning_content);
  if (reasoning) yield { reasoning };
  const content = stringOrUndefined(delta?.content);
  if (content) yield { content };
  if (!Array.isArray(delta?.tool_calls)) return;
  for (const [position, call] of delta.tool_calls.entries()) {
    yield {
      toolCall: {
        index: Number.isInteger(call?.index) ? call.index : position,
        id: stringOrUndefined(call?.id),
        name: stringOrUndefined(call?.function?.name),
        argumentsDelta: stringOrUndefined(call?.function?.arguments) ?? '',
      },
    };
  }
}

// Yields the answer as it arrives, in pieces: {content: text}, {reasoning: text} (the model's
// reasoning, usually before the content) and {toolCall: {index, id, name, argumentsDelta}} (the
// first piece of a call has its id and name, the later ones of the same index undefined there and
// more arguments text to append). Aborting `signal` ends it with an AbortError.
export async function* streamChat(apiKey, body, signal) {
  const response = await request('/v1/chat/completions', {
    method: 'POST', headers: headers(apiKey), body: JSON.stringify({ ...body, stream: true }), signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (err.name === 'AbortError') throw err;
        throw new ApiError(0, 'the connection broke during the answer');
      }
      if (chunk.done) throw new ApiError(0, 'the answer ended before it was complete');
      buffer += chunk.value;
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = events.pop();
      for (const event of events) {
        const data = event.split(/\r?\n/).filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, '')).join('\n');
        if (data === '') continue;
        if (data === '[DONE]') return;
        const message = JSON.parse(data);
        if (message.error) throw new ApiError(response.status, message.error.message ?? 'the model failed');
        yield* deltaPieces(message.choices?.[0]?.delta);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
