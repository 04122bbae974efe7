// files.js: the file browser of an allocation (fs/ls, fs/stat), text
// files paged with fs/readat, downloads with fs/cat and fs/archive.
import {h, table, bytes, time, short} from './dom.js';
import {get, request, q, enc, download, isAbort} from './api.js';
import {errorBox, notFound, allocLink, crumbs, link} from './view.js';

// page is how much of a file one view shows.
const page = 64 << 10;

// files is /ui/allocations/:id/fs/*path and /ui/allocations/:id/:task/fs/*path.
export async function files(ctx) {
  const {signal, params: [id, task, rest]} = ctx;
  const base = task ? '/' + task : '';
  const rel = (rest || '').replace(/^\/+|\/+$/g, '');
  const path = base + '/' + rel;
  const uiBase = `/ui/allocations/${enc(id)}${task ? '/' + enc(task) : ''}/fs/`;
  const uiPath = p => uiBase + p.split('/').map(enc).join('/');

  let st;
  try {
    st = await get(`/v1/client/fs/stat/${enc(id)}` + q({path}), {signal});
  } catch (e) {
    if (isAbort(e)) return [];
    if (e.notFound || /no such file|not found/i.test(e.message)) return notFound(`Nothing at ${path} in allocation ${short(id)}.`);
    return [h('h1', null, 'Files'), errorBox(e)];
  }
  const parts = rel ? rel.split('/') : [];
  const trail = crumbs(allocLink(id, short(id)), link(uiBase, task || 'alloc dir'),
    ...parts.map((p, i) => i === parts.length - 1 ? p : link(uiPath(parts.slice(0, i + 1).join('/')) + '/', p)));
  const title = h('h1', null, parts.at(-1) || (task ? task : 'Allocation files'));

  if (st.IsDir) {
    const list = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
    const status = h('div', {class: 'status', 'aria-live': 'polite'});
    const archive = h('button', {type: 'button', id: 'fs-archive', onclick: async () => {
      const name = `${short(id)}-${(parts.at(-1) || task || 'alloc')}.tar.gz`;
      try { await download(`/v1/client/fs/archive/${enc(id)}` + q({path}), name, signal); } catch (e) { if (!isAbort(e)) status.replaceChildren(errorBox(e)); }
    }}, 'Download as archive');
    try {
      const entries = await get(`/v1/client/fs/ls/${enc(id)}` + q({path}), {signal});
      entries.sort((a, b) => (b.IsDir - a.IsDir) || a.Name.localeCompare(b.Name));
      const prefix = rel ? rel + '/' : '';
      list.replaceChildren(table(['Name', 'Size', {text: 'Mode', class: 'wide'}, {text: 'Modified', class: 'wide'}],
        entries.map(f => ({attrs: {'data-file': f.Name}, cells: [
          link(uiPath(prefix + f.Name) + (f.IsDir ? '/' : ''), f.Name + (f.IsDir ? '/' : '')),
          f.IsDir ? '–' : bytes(f.Size), {text: f.FileMode, class: 'wide mono'}, {text: time(f.ModTime), class: 'wide'}]})),
        {empty: 'Empty directory', class: 'files'}));
    } catch (e) {
      if (!isAbort(e)) list.replaceChildren(errorBox(e));
    }
    return [trail, title, h('div', {class: 'toolbar'}, archive), status, list];
  }
  return [trail, title, viewer(ctx, id, path, st)];
}

// looksBinary guesses from the first bytes, as less does: a NUL, or many
// control characters.
function looksBinary(buf) {
  const b = new Uint8Array(buf, 0, Math.min(buf.byteLength, 4096));
  let ctl = 0;
  for (const c of b) {
    if (c === 0) return true;
    if (c < 9 || (c > 13 && c < 32)) ctl++;
  }
  return b.length > 0 && ctl / b.length > 0.1;
}

// viewer shows a file a page at a time; a binary file is offered as a
// download instead.
function viewer(ctx, id, path, st) {
  const {signal} = ctx;
  const name = path.split('/').pop();
  const el = h('div', {class: 'viewer'});
  const pre = h('pre', {id: 'file-content', class: 'content', tabindex: '0'});
  const info = h('span', {class: 'muted', id: 'file-range'});
  const dl = h('button', {type: 'button', onclick: () => download(`/v1/client/fs/cat/${enc(id)}` + q({path}), name, signal).catch(e => { if (!isAbort(e)) el.append(errorBox(e)); })}, 'Download');
  const pages = Math.max(1, Math.ceil(st.Size / page));
  let at = 0;
  const btn = (text, to) => h('button', {type: 'button', disabled: to() < 0 || to() >= pages || to() === at, onclick: () => show(to())}, text);
  const bar = h('div', {class: 'toolbar'});
  const show = async n => {
    at = n;
    bar.replaceChildren(dl, btn('First', () => 0), btn('Previous', () => at - 1), btn('Next', () => at + 1), btn('Last', () => pages - 1), info);
    const off = n * page;
    try {
      // A file of one page is read whole with cat; a larger one a page at
      // a time with readat.
      const res = await request(st.Size <= page ? `/v1/client/fs/cat/${enc(id)}` + q({path})
        : `/v1/client/fs/readat/${enc(id)}` + q({path, offset: off, limit: page}), {signal});
      const buf = await res.arrayBuffer();
      if (n === 0 && looksBinary(buf)) {
        el.replaceChildren(h('p', null, `${name} is a binary file (${bytes(st.Size)}).`), h('div', {class: 'toolbar'}, dl));
        return;
      }
      pre.textContent = new TextDecoder().decode(buf);
      info.textContent = st.Size <= page ? bytes(st.Size) : `bytes ${off}–${off + buf.byteLength} of ${st.Size}`;
    } catch (e) {
      if (!isAbort(e)) pre.replaceChildren(errorBox(e));
    }
  };
  el.append(bar, pre);
  show(0);
  return el;
}
