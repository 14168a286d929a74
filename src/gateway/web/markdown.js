// Renders a safe subset of Markdown as DOM nodes. Model text only ever becomes text nodes, so it
// can never create elements, attributes or scripts of its own; links are kept only for http(s).

const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s*>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const INLINE = new RegExp([
  /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source,                    // 1, 2: code span
  /\[([^\]\n]+)\]\(\s*<?([^)\s>]+)>?\s*\)/.source,                  // 3, 4: link
  /<(https?:\/\/[^\s>]+)>/.source,                                 // 5: autolink
  /(\*\*|__)(?=\S)([\s\S]*?\S)\6/.source,                          // 6, 7: strong
  /(?<![\w*])([*_])(?=[^\s*_])([\s\S]*?[^\s*_])\8(?![\w*])/.source,  // 8, 9: emphasis
  /~~(?=\S)([\s\S]*?\S)~~/.source,                                 // 10: strikethrough
  /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"])/.source,              // 11: bare URL
].join('|'), 'g');

// An element with children: strings become text nodes.
export function el(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

// The URL when it is an absolute http(s) URL, else null.
function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

function link(label, target, fallback) {
  const href = safeUrl(target);
  if (!href) return document.createTextNode(fallback);
  const a = el('a', label);
  a.href = href;
  a.rel = 'noopener noreferrer';
  a.target = '_blank';
  return a;
}

function renderInline(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    out.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1]) out.append(el('code', m[2]));
    else if (m[3]) out.append(link(renderInline(m[3]), m[4], m[0]));
    else if (m[5]) out.append(link(m[5], m[5], m[0]));
    else if (m[6]) out.append(el('strong', renderInline(m[7])));
    else if (m[8]) out.append(el('em', renderInline(m[9])));
    else if (m[10]) out.append(el('del', renderInline(m[10])));
    else out.append(link(m[11], m[11], m[0]));
  }
  out.append(text.slice(last));
  return out;
}

function codeBlock(code, language) {
  const block = el('div');
  block.className = 'code-block';
  const bar = el('div', language || 'code');
  bar.className = 'code-bar';
  if (navigator.clipboard) {
    const copy = el('button', 'Copy');
    copy.type = 'button';
    copy.addEventListener('click', () => navigator.clipboard.writeText(code).then(
      () => { copy.textContent = 'Copied'; }, () => { copy.textContent = 'Copy failed'; }));
    bar.append(copy);
  }
  const body = el('code', code);
  if (language) body.className = 'language-' + language;
  block.append(bar, el('pre', body));
  return block;
}

const cells = (line) => line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());

function table(lines) {
  const row = (line, tag) => el('tr', ...cells(line).map((c) => el(tag, renderInline(c))));
  const wrap = el('div', el('table', el('thead', row(lines[0], 'th')),
    el('tbody', ...lines.slice(2).map((line) => row(line, 'td')))));
  wrap.className = 'table-wrap';
  return wrap;
}

const indentOf = (line) => line.match(/^\s*/)[0].length;
const isTableStart = (lines, i) => lines[i].includes('|') && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]);
const startsBlock = (lines, i) => FENCE.test(lines[i]) || HEADING.test(lines[i]) || RULE.test(lines[i]) ||
  QUOTE.test(lines[i]) || ITEM.test(lines[i]) || isTableStart(lines, i);

// A list starting at lines[i]: items at its indent, with their indented continuation lines.
function list(lines, i) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]);
  const indent = first[1].length;
  const node = el(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    for (i++; i < lines.length; i++) {
      const line = lines[i];
      if (line.trim() === '') {
        const next = lines.slice(i + 1).find((l) => l.trim() !== '');
        if (next === undefined || indentOf(next) <= indent) break;
        body.push('');
      } else if (indentOf(line) > indent) {
        body.push(line.slice(Math.min(indentOf(line), indent + m[2].length + 1)));
      } else {
        break;
      }
    }
    while (i < lines.length && lines[i].trim() === '' && ITEM.test(lines[i + 1] ?? '')) i++;
    node.append(el('li', body.length === 1 ? renderInline(body[0]) : renderBlocks(body)));
  }
  return [node, i];
}

function renderBlocks(lines) {
  const out = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(m[1]); i++) body.push(lines[i]);
      i++;
      out.append(codeBlock(body.join('\n'), m[2]));
    } else if (line.trim() === '') {
      i++;
    } else if ((m = HEADING.exec(line))) {
      out.append(el('h' + m[1].length, renderInline(m[2])));
      i++;
    } else if (RULE.test(line)) {
      out.append(el('hr'));
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) body.push(lines[i].replace(QUOTE, ''));
      out.append(el('blockquote', renderBlocks(body)));
    } else if (ITEM.test(line)) {
      const [node, next] = list(lines, i);
      out.append(node);
      i = next;
    } else if (isTableStart(lines, i)) {
      const rows = [lines[i], lines[i + 1]];
      for (i += 2; i < lines.length && lines[i].includes('|'); i++) rows.push(lines[i]);
      out.append(table(rows));
    } else {
      const p = el('p', renderInline(line.trim()));
      for (i++; i < lines.length && lines[i].trim() !== '' && !startsBlock(lines, i); i++) {
        p.append(el('br'), renderInline(lines[i].trim()));
      }
      out.append(p);
    }
  }
  return out;
}

// The Markdown text as a fragment of safe DOM nodes. An unclosed code fence (a streaming answer)
// runs to the end.
export function renderMarkdown(text) {
  return renderBlocks(text.replace(/\r\n?/g, '\n').split('\n'));
}
