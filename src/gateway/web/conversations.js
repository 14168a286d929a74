// Conversations kept only in this browser (localStorage), and the checks an imported file must pass.

const STORAGE_KEY = 'chatai.conversations';
const ROLES = ['user', 'assistant', 'system'];
export const DEFAULT_TEMPERATURE = 0.7;
export const NEW_TITLE = 'New chat';

const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);
// crypto.randomUUID() needs a secure context; the page may be served over plain HTTP.
const newId = () => Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');

export function newConversation(model = '') {
  return { id: newId(), title: NEW_TITLE, model, system: '', temperature: DEFAULT_TEMPERATURE, messages: [], updated: Date.now() };
}

function optionalString(value, field, fallback, maxLength = Infinity) {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw new Error(`${field} must be a string`);
  if (value.length > maxLength) throw new Error(`${field} is longer than ${maxLength} characters`);
  return value;
}

// A tool call the model made: {id, name, arguments}, the arguments as the model wrote them.
function checkToolCall(call, field) {
  if (!isObject(call)) throw new Error(`${field} must be an object`);
  return {
    id: optionalString(call.id, `${field}.id`, '', 200),
    name: optionalString(call.name, `${field}.name`, '', 200),
    arguments: optionalString(call.arguments, `${field}.arguments`, ''),
  };
}

// Conversations saved before answers kept their reasoning and tool calls have neither field.
function checkMessage(message, field) {
  if (!isObject(message)) throw new Error(`${field} must be an object`);
  if (!ROLES.includes(message.role)) throw new Error(`${field}.role must be "user", "assistant" or "system"`);
  if (typeof message.content !== 'string') throw new Error(`${field}.content must be a string`);
  if (message.stopped !== undefined && typeof message.stopped !== 'boolean') throw new Error(`${field}.stopped must be true or false`);
  if (message.toolCalls !== undefined && !Array.isArray(message.toolCalls)) {
    throw new Error(`${field}.toolCalls must be a list`);
  }
  const checked = { role: message.role, content: message.content };
  if (message.stopped) checked.stopped = true;
  if (message.model !== undefined) checked.model = optionalString(message.model, `${field}.model`, '', 200);
  const reasoning = optionalString(message.reasoning, `${field}.reasoning`, '');
  if (reasoning) checked.reasoning = reasoning;
  const toolCalls = (message.toolCalls ?? []).map((c, i) => checkToolCall(c, `${field}.toolCalls[${i}]`));
  if (toolCalls.length) checked.toolCalls = toolCalls;
  return checked;
}

function checkConversation(value, field, keepId) {
  if (!isObject(value)) throw new Error(`${field} must be an object`);
  if (!Array.isArray(value.messages)) throw new Error(`${field}.messages must be a list`);
  const temperature = value.temperature ?? DEFAULT_TEMPERATURE;
  if (typeof temperature !== 'number' || !(temperature >= 0 && temperature <= 2)) {
    throw new Error(`${field}.temperature must be a number from 0 to 2`);
  }
  if (value.updated !== undefined && !Number.isFinite(value.updated)) throw new Error(`${field}.updated must be a number`);
  return {
    id: keepId && typeof value.id === 'string' ? value.id : newId(),
    title: optionalString(value.title, `${field}.title`, NEW_TITLE, 200).trim() || NEW_TITLE,
    model: optionalString(value.model, `${field}.model`, '', 200),
    system: optionalString(value.system, `${field}.system`, ''),
    temperature,
    messages: value.messages.map((m, i) => checkMessage(m, `${field}.messages[${i}]`)),
    updated: value.updated ?? Date.now(),
  };
}

// The conversations of an exported file ({"conversations": [...]}), each checked and given a new
// id unless keepIds. Throws an Error naming the first field that is wrong; nothing is kept then.
export function parseConversations(data, keepIds = false) {
  if (!isObject(data) || !Array.isArray(data.conversations)) throw new Error('the file must hold {"conversations": [...]}');
  return data.conversations.map((c, i) => checkConversation(c, `conversations[${i}]`, keepIds));
}

export function exportConversations(conversations) {
  const strip = ({ id, ...rest }) => rest;
  return JSON.stringify({ version: 1, exported: new Date().toISOString(), conversations: conversations.map(strip) }, null, 2);
}

// The stored conversations, newest first; what can't be read is left out.
export function loadConversations() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? '{"conversations":[]}');
    return parseConversations(stored, true).sort((a, b) => b.updated - a.updated);
  } catch (err) {
    console.error('The stored conversations could not be read:', err);
    return [];
  }
}

// Throws when the browser's storage is full.
export function saveConversations(conversations) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ version: 1, conversations }));
}
