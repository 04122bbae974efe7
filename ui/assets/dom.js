// dom.js: building elements, formatting numbers and times.

// h makes an element: h('a', {href: '/x', class: 'y'}, 'text', child...).
// Attributes named on* are listeners; null and false attributes and
// children are left out. Text is always text, never parsed as HTML.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// table builds a table from column heads and rows of cells; a head or
// cell that is {text, class} gets the class (used to hide columns on
// narrow screens).
export function table(heads, rows, opts = {}) {
  const cell = (tag, c) => (c && typeof c === 'object' && !(c instanceof Node) && !Array.isArray(c))
    ? h(tag, {class: c.class}, c.text) : h(tag, null, c);
  return h('div', {class: 'scroll'}, h('table', {class: opts.class},
    opts.caption ? h('caption', null, opts.caption) : null,
    h('thead', null, h('tr', null, heads.map(x => cell('th', x)))),
    h('tbody', null, rows.length ? rows.map(r => h('tr', r.attrs || null, r.cells.map(c => cell('td', c))))
      : h('tr', null, h('td', {colspan: heads.length, class: 'muted'}, opts.empty || 'None')))));
}

// kv is a two-column list of keys and values.
export function kv(entries) {
  return h('dl', {class: 'kv'}, entries.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

export function bytes(n) {
  if (n == null || isNaN(n)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + u[i];
}

export function pct(n) { return n == null || isNaN(n) ? '–' : n.toFixed(1) + '%'; }

// time formats a Go time (RFC 3339 string) or nanoseconds since the epoch.
export function time(t) {
  if (t == null || t === '' || t === 0 || (typeof t === 'string' && t.startsWith('0001-'))) return '–';
  const d = typeof t === 'number' ? new Date(t / 1e6) : new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

export function short(id) { return (id || '').slice(0, 8); }

// badge shows a status word with a class per status.
export function badge(status) {
  return h('span', {class: 'badge s-' + String(status || 'unknown').replace(/[^a-z]/gi, '')}, status || 'unknown');
}

// section is a titled block of a page.
export function section(title, ...body) {
  return h('section', null, h('h2', null, title), ...body);
}
