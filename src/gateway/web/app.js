// The chat page: a model picker, streamed answers with a stop button, and conversations kept in
// this browser.
import { ApiError, listModels, streamChat } from './chat_api.js';
import {
  DEFAULT_TEMPERATURE, NEW_TITLE, exportConversations, loadConversations, newConversation,
  parseConversations, saveConversations,
} from './conversations.js';
import { el, renderMarkdown } from './markdown.js';

const KEY_STORAGE = 'chatai.apiKey';
const CURRENT_STORAGE = 'chatai.current';
const MAX_IMPORT_BYTES = 20 << 20;
const MODEL_REFRESH_MS = 30000;

const ui = Object.fromEntries([
  'toggle-sidebar', 'new-chat', 'conversation-list', 'export', 'import', 'import-file',
  'key-settings', 'api-key', 'model', 'model-state', 'title', 'system-prompt',
  'temperature', 'temperature-value', 'delete-chat', 'messages', 'notice', 'notice-text',
  'notice-retry', 'composer', 'prompt', 'send', 'stop',
].map((id) => [id.replace(/-(\w)/g, (_, c) => c.toUpperCase()), document.getElementById(id)]));

const narrow = () => matchMedia('(max-width: 720px)').matches;
const state = {
  conversations: loadConversations(), current: null, models: [], running: null, retry: null, keyRefused: false,
};

// ---- API key: from the address (#key=...) once, then from localStorage.

// True when the address held a key.
function takeKeyFromAddress() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has('key')) return false;
  localStorage.setItem(KEY_STORAGE, params.get('key').trim());
  params.delete('key');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  return true;
}

const apiKey = () => localStorage.getItem(KEY_STORAGE) ?? '';

function askForKey(message) {
  showNotice(message);
  ui.keySettings.open = true;
  ui.apiKey.focus();
}

// ---- Notices: errors and what the page is waiting for.

function showNotice(text, retry = null) {
  ui.noticeText.textContent = text;
  ui.notice.hidden = false;
  state.retry = retry;
  ui.noticeRetry.hidden = !retry;
}

function clearNotice() {
  ui.notice.hidden = true;
  state.retry = null;
}

function explain(err, model) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err.message}`;
  const wait = err.retryAfter === null ? '' : ` Try again in ${err.retryAfter} s.`;
  switch (err.status) {
    case 0: return `Network error: ${err.message}. Check your connection and try again.`;
    case 401: return 'The service did not accept the API key. Enter your key under "API key".';
    case 429: return `Too many requests: the rate limit was reached.${wait}`;
    case 503: return `${model} is not available right now (${err.message}).${wait}`;
    default: return `The service answered ${err.status}: ${err.message}`;
  }
}

// ---- Storage.

function save() {
  try {
    saveConversations(state.conversations);
  } catch (err) {
    showNotice(`The conversations could not be saved in this browser: ${err.message}`);
  }
}

const current = () => state.conversations.find((c) => c.id === state.current);

function touch(conversation) {
  conversation.updated = Date.now();
  state.conversations.sort((a, b) => b.updated - a.updated);
  save();
}

// ---- Models.

async function refreshModels() {
  try {
    state.models = await listModels(apiKey());
    state.keyRefused = false;
  } catch (err) {
    state.keyRefused = err instanceof ApiError && err.status === 401;
    if (state.keyRefused) askForKey(explain(err));
    else ui.modelState.textContent = 'The models could not be listed.';
    return;
  }
  renderModels();
}

function renderModels() {
  const wanted = current()?.model || ui.model.value;
  ui.model.replaceChildren(...state.models.map(({ id, state: modelState }) => {
    const option = el('option', `${id} (${modelState})`);
    option.value = id;
    return option;
  }));
  const known = state.models.some((m) => m.id === wanted);
  const ready = state.models.find((m) => m.state === 'ready') ?? state.models[0];
  if (known) ui.model.value = wanted;
  else if (ready) ui.model.value = ready.id;
  renderModelState();
}

function renderModelState() {
  const model = state.models.find((m) => m.id === ui.model.value);
  ui.modelState.textContent = model ? model.state : 'no models';
  ui.modelState.dataset.state = model?.state ?? 'offline';
}

// ---- Rendering.

function renderList() {
  ui.conversationList.replaceChildren(...state.conversations.map((c) => {
    const button = el('button', c.title);
    button.type = 'button';
    if (c.id === state.current) button.setAttribute('aria-current', 'true');
    button.addEventListener('click', () => select(c.id));
    return el('li', button);
  }));
}

// The arguments of a tool call, pretty-printed when they are JSON (a streaming call's are not yet).
function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function fold(className, body) {
  const view = el('details', el('summary'), body);
  view.className = className;
  return view;
}

// `thinking`: the reasoning is still streaming.
function fillReasoning(view, reasoning, thinking) {
  const folded = view.querySelector('.reasoning');
  folded.hidden = !reasoning;
  folded.querySelector('summary').textContent = thinking ? 'Thinking…' : 'Reasoning';
  folded.querySelector('.reasoning-text').replaceChildren(renderMarkdown(reasoning));
}

// Views already shown are updated in place, so that a call the reader opened stays open.
function fillToolCalls(view, toolCalls) {
  const list = view.querySelector('.tool-calls');
  toolCalls.forEach((call, i) => {
    const folded = list.children[i] ?? list.appendChild(fold('tool-call', el('pre', el('code'))));
    folded.querySelector('summary').textContent = `Tool call: ${call.name || 'unnamed'}`;
    folded.querySelector('code').textContent = prettyArguments(call.arguments);
  });
}

function fillMessage(view, message) {
  const content = view.querySelector('.content');
  content.replaceChildren(message.role === 'assistant' ? renderMarkdown(message.content) : message.content);
  if (message.role === 'assistant') {
    fillReasoning(view, message.reasoning ?? '', false);
    fillToolCalls(view, message.toolCalls ?? []);
  }
  view.dataset.state = message.stopped ? 'stopped' : 'done';
  view.removeAttribute('aria-busy');
  view.querySelector('.note').hidden = !message.stopped;
}

// An answer shows its reasoning folded above the content and its tool calls folded below it.
function messageView(message) {
  const who = message.role === 'user' ? 'You' : message.role === 'system' ? 'System' : message.model || 'Assistant';
  const note = el('p', 'Stopped before the end.');
  note.className = 'note';
  const content = el('div');
  content.className = 'content';
  const view = el('article', el('h2', who));
  if (message.role === 'assistant') {
    const reasoningText = el('div');
    reasoningText.className = 'reasoning-text';
    const toolCalls = el('div');
    toolCalls.className = 'tool-calls';
    view.append(fold('reasoning', reasoningText), content, toolCalls, note);
  } else {
    view.append(content, note);
  }
  view.className = 'message';
  view.dataset.role = message.role;
  fillMessage(view, message);
  return view;
}

const nearBottom = () => ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;

function appendView(view) {
  const follow = nearBottom();
  ui.messages.append(view);
  if (follow) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function renderConversation() {
  const conversation = current();
  ui.messages.replaceChildren(...conversation.messages.map(messageView));
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.title.value = conversation.title;
  ui.systemPrompt.value = conversation.system;
  ui.temperature.value = conversation.temperature;
  ui.temperatureValue.textContent = conversation.temperature.toFixed(1);
  if (state.models.some((m) => m.id === conversation.model)) ui.model.value = conversation.model;
  renderModelState();
  renderList();
}

function select(id) {
  if (state.running) return;
  state.current = id;
  localStorage.setItem(CURRENT_STORAGE, id);
  clearNotice();
  renderConversation();
  if (narrow()) setSidebar(false);
  ui.prompt.focus();
}

function startNew() {
  const empty = state.conversations.find((c) => c.messages.length === 0);
  const conversation = empty ?? newConversation(ui.model.value);
  if (!empty) state.conversations.unshift(conversation);
  save();
  select(conversation.id);
}

function setSidebar(shown) {
  document.body.classList.toggle('sidebar-hidden', !shown);
  ui.toggleSidebar.setAttribute('aria-expanded', String(shown));
}

// ---- Asking the model.

function setRunning(controller) {
  state.running = controller;
  ui.send.hidden = Boolean(controller);
  ui.stop.hidden = !controller;
  ui.deleteChat.disabled = Boolean(controller);
  ui.newChat.disabled = Boolean(controller);
}

function wait(seconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new DOMException('stopped', 'AbortError'));
    }, { once: true });
  });
}

// Adds a piece of a streaming answer (see streamChat) to the answer `reply` and to its view.
// `stream` holds what streaming needs beside the answer: each tool call by its index, and whether
// the reasoning is still coming.
function addPiece(view, reply, stream, piece) {
  if (stream.thinking && !piece.reasoning) fillReasoning(view, reply.reasoning, false);
  stream.thinking = Boolean(piece.reasoning);
  if (piece.reasoning) {
    reply.reasoning += piece.reasoning;
    fillReasoning(view, reply.reasoning, true);
  } else if (piece.content) {
    reply.content += piece.content;
    view.querySelector('.content').replaceChildren(renderMarkdown(reply.content));
  } else {
    const { index, id, name, argumentsDelta } = piece.toolCall;
    if (!stream.calls.has(index)) {
      stream.calls.set(index, { id: '', name: '', arguments: '' });
      reply.toolCalls.push(stream.calls.get(index));
    }
    const call = stream.calls.get(index);
    if (id) call.id = id;
    if (name) call.name = name;
    call.arguments += argumentsDelta;
    fillToolCalls(view, reply.toolCalls);
  }
}

// Streams the model's answer to the conversation's messages into a new message. A model that is
// starting (503 with Retry-After) is asked again when it says; Stop ends either.
async function answer(conversation) {
  clearNotice();
  const model = ui.model.value;
  if (!model) {
    showNotice('No model to ask: the model list is empty or could not be loaded.', () => answer(conversation));
    return;
  }
  conversation.model = model;
  // The model gets the answers' content only: not their reasoning, and not their tool calls, as
  // the page runs no tools whose results could go with them.
  const messages = conversation.messages.map(({ role, content }) => ({ role, content }));
  if (conversation.system.trim()) messages.unshift({ role: 'system', content: conversation.system });
  const request = { model, messages, temperature: conversation.temperature };
  const reply = { role: 'assistant', content: '', model, reasoning: '', toolCalls: [] };
  const answered = () => Boolean(reply.content || reply.reasoning || reply.toolCalls.length);
  const view = messageView(reply);
  view.dataset.state = 'streaming';
  view.setAttribute('aria-busy', 'true');
  const controller = new AbortController();
  setRunning(controller);
  let failed = null;
  try {
    for (;;) {
      try {
        const stream = { calls: new Map(), thinking: false };
        for await (const piece of streamChat(apiKey(), request, controller.signal)) {
          if (!answered()) {
            clearNotice();
            appendView(view);
          }
          const follow = nearBottom();
          addPiece(view, reply, stream, piece);
          if (follow) ui.messages.scrollTop = ui.messages.scrollHeight;
        }
        break;
      } catch (err) {
        const starting = err instanceof ApiError && err.status === 503 && err.retryAfter !== null && !answered();
        if (!starting) throw err;
        const seconds = Math.min(Math.max(err.retryAfter, 1), 60);
        showNotice(`${model} is starting. Asking again in ${seconds} s (Stop cancels).`);
        refreshModels();
        await wait(seconds, controller.signal);
      }
    }
  } catch (err) {
    if (err.name === 'AbortError') reply.stopped = true;
    else failed = err;
  } finally {
    setRunning(null);
  }
  if (failed) {
    reply.stopped = answered();
    if (failed.status === 401) askForKey(explain(failed, model));
    else showNotice(explain(failed, model), () => answer(conversation));
  } else if (reply.stopped && !answered()) {
    clearNotice();
  }
  if (answered()) {
    if (!reply.reasoning) delete reply.reasoning;
    if (!reply.toolCalls.length) delete reply.toolCalls;
    conversation.messages.push(reply);
    fillMessage(view, reply);
    touch(conversation);
    renderList();
  }
}

function send(text) {
  const conversation = current();
  conversation.messages.push({ role: 'user', content: text });
  if (conversation.title === NEW_TITLE) conversation.title = text.replace(/\s+/g, ' ').trim().slice(0, 60);
  touch(conversation);
  appendView(messageView(conversation.messages.at(-1)));
  renderList();
  answer(conversation);
}

// ---- Import and export.

function download() {
  const url = URL.createObjectURL(new Blob([exportConversations(state.conversations)], { type: 'application/json' }));
  const a = el('a');
  a.href = url;
  a.download = `chats-${new Date().toISOString().slice(0, 10)}.json`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function importFile(file) {
  if (file.size > MAX_IMPORT_BYTES) throw new Error(`the file is larger than ${MAX_IMPORT_BYTES >> 20} MB`);
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (err) {
    throw new Error(`the file is not JSON (${err.message})`);
  }
  const imported = parseConversations(data);
  state.conversations = [...imported, ...state.conversations].sort((a, b) => b.updated - a.updated);
  save();
  renderList();
  return imported.length;
}

// ---- Events.

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || state.running) return;
  ui.prompt.value = '';
  send(text);
});
ui.prompt.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.stop.addEventListener('click', () => state.running?.abort());
ui.noticeRetry.addEventListener('click', () => {
  const retry = state.retry;
  if (retry && !state.running) retry();
});
ui.newChat.addEventListener('click', startNew);
ui.toggleSidebar.addEventListener('click', () => setSidebar(document.body.classList.contains('sidebar-hidden')));
// On a narrow screen the sidebar covers the chat: Escape or a click beside it closes it.
document.querySelector('main').addEventListener('click', (event) => {
  if (narrow() && !ui.toggleSidebar.contains(event.target)) setSidebar(false);
});
addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && narrow()) setSidebar(false);
});
ui.model.addEventListener('change', () => {
  current().model = ui.model.value;
  save();
  renderModelState();
});
ui.apiKey.addEventListener('change', () => {
  localStorage.setItem(KEY_STORAGE, ui.apiKey.value.trim());
  ui.apiKey.value = '';
  ui.apiKey.placeholder = 'Saved';
  clearNotice();
  refreshModels();
});
ui.title.addEventListener('change', () => {
  current().title = ui.title.value.trim() || NEW_TITLE;
  ui.title.value = current().title;
  touch(current());
  renderList();
});
ui.systemPrompt.addEventListener('change', () => {
  current().system = ui.systemPrompt.value;
  save();
});
ui.temperature.addEventListener('input', () => {
  const value = Number(ui.temperature.value);
  current().temperature = Number.isFinite(value) ? value : DEFAULT_TEMPERATURE;
  ui.temperatureValue.textContent = current().temperature.toFixed(1);
  save();
});
ui.deleteChat.addEventListener('click', () => {
  const conversation = current();
  if (state.running || !confirm(`Delete the conversation "${conversation.title}"?`)) return;
  state.conversations = state.conversations.filter((c) => c !== conversation);
  save();
  startNew();
});
ui.export.addEventListener('click', download);
ui.import.addEventListener('click', () => ui.importFile.click());
ui.importFile.addEventListener('change', async () => {
  const [file] = ui.importFile.files;
  ui.importFile.value = '';
  if (!file) return;
  try {
    const count = await importFile(file);
    showNotice(`Imported ${count} conversation${count === 1 ? '' : 's'}.`);
  } catch (err) {
    showNotice(`Nothing was imported: ${err.message}.`);
  }
});
addEventListener('hashchange', () => {
  if (takeKeyFromAddress()) refreshModels();
});
addEventListener('storage', (event) => {
  if (event.key === KEY_STORAGE) refreshModels();
});

// ---- Start.

takeKeyFromAddress();
ui.apiKey.placeholder = apiKey() ? 'Saved' : 'Paste your key';
if (narrow()) setSidebar(false);
const remembered = localStorage.getItem(CURRENT_STORAGE);
if (state.conversations.some((c) => c.id === remembered)) select(remembered);
else startNew();
refreshModels();
// Model states change as services start and stop; a refused key waits for a new one.
setInterval(() => { if (!state.running && !state.keyRefused) refreshModels(); }, MODEL_REFRESH_MS);
