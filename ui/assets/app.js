// app.js: the router. Addresses are Nomad UI's, so links written for
// Nomad open the same thing here; the agent answers every /ui/... path
// with this page, and the history API moves between them.
import {h, kv} from './dom.js';
import {get, token, setToken, isAbort} from './api.js';
import {errorBox, notFound} from './view.js';
import {clients, client} from './nodes.js';
import {jobs, job, allocations, allocation} from './allocs.js';
import {files} from './files.js';
import {taskLogs, monitor} from './logs.js';

// routes: a pattern of path segments (':x' one segment, '*' the rest),
// the nav section and the view. A view returns elements (or a promise
// of them) and stops its calls when ctx.signal aborts.
const routes = [
  ['clients', 'clients', clients],
  ['clients/:id', 'clients', client],
  ['clients/:id/monitor', 'clients', monitor],
  ['jobs', 'jobs', jobs],
  ['jobs/:id', 'jobs', job],
  ['allocations', 'allocations', allocations],
  ['allocations/:id', 'allocations', allocation],
  ['allocations/:id/fs/*', 'allocations', ctx => files({...ctx, params: [ctx.params[0], '', ctx.params[1]]})],
  ['allocations/:id/fs', 'allocations', ctx => files({...ctx, params: [ctx.params[0], '', '']})],
  ['allocations/:id/:task', 'allocations', allocation],
  ['allocations/:id/:task/logs', 'allocations', taskLogs],
  ['allocations/:id/:task/fs/*', 'allocations', files],
  ['allocations/:id/:task/fs', 'allocations', ctx => files({...ctx, params: [...ctx.params, '']})],
  ['settings/tokens', 'settings', tokens],
];

function match(path) {
  const segs = path.replace(/^\/ui\/?/, '').split('/');
  if (segs.at(-1) === '' && segs.length > 1) segs.pop();
  for (const [pattern, section, view] of routes) {
    const ps = pattern.split('/');
    const params = [];
    let ok = true;
    for (let i = 0; i < ps.length && ok; i++) {
      if (ps[i] === '*') { params.push(segs.slice(i).map(decodeURIComponent).join('/')); return {section, view, params}; }
      if (i >= segs.length) ok = false;
      else if (ps[i].startsWith(':')) ok = segs[i] !== '' && params.push(decodeURIComponent(segs[i]));
      else ok = ps[i] === segs[i];
    }
    if (ok && ps.length === segs.length) return {section, view, params};
  }
  return null;
}

const main = document.getElementById('main');
let current = null; // the AbortController of the view shown

async function render() {
  if (current) current.abort();
  current = new AbortController();
  const {signal} = current;
  let path = location.pathname;
  if (path === '/ui' || path === '/ui/') { history.replaceState(null, '', '/ui/clients'); path = '/ui/clients'; }
  const m = match(path);
  document.querySelectorAll('header nav a').forEach(a => a.toggleAttribute('aria-current', !!m && a.dataset.section === m.section));
  main.setAttribute('aria-busy', 'true');
  let els;
  try {
    els = m ? await m.view({signal, params: m.params}) : notFound();
  } catch (e) {
    if (isAbort(e)) return;
    els = errorBox(e);
  }
  if (signal.aborted) return;
  main.replaceChildren(...[].concat(els));
  main.removeAttribute('aria-busy');
  const h1 = main.querySelector('h1');
  document.title = (h1 ? h1.textContent + ' · ' : '') + 'Tether';
  if (navigated) main.focus({preventScroll: true});
}

let navigated = false;

// navigate shows path without reloading the page.
export function navigate(path) {
  history.pushState(null, '', path);
  navigated = true;
  window.scrollTo(0, 0);
  render();
}

document.addEventListener('click', ev => {
  const a = ev.target.closest('a');
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui/')) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => { navigated = true; render(); });

// tokens is /ui/settings/tokens: the secret is kept in sessionStorage and
// sent as X-Nomad-Token; /v1/acl/token/self says whose it is.
function tokens(ctx) {
  const input = h('input', {type: 'password', id: 'token-secret', autocomplete: 'off', placeholder: 'Secret ID', 'aria-label': 'Secret ID', value: token()});
  const info = h('div', {id: 'token-info', 'aria-live': 'polite'});
  const show = async () => {
    if (!token()) { info.replaceChildren(h('p', {class: 'muted'}, 'No token set: calls are anonymous.')); return; }
    try {
      const t = await get('/v1/acl/token/self', {signal: ctx.signal});
      info.replaceChildren(kv([['Name', t.Name || '–'], ['Type', t.Type], ['Policies', (t.Policies || []).join(', ') || '–'], ['Accessor', t.AccessorID]]));
    } catch (e) {
      if (!isAbort(e)) info.replaceChildren(errorBox(e));
    }
  };
  const form = h('form', {class: 'toolbar', onsubmit: ev => { ev.preventDefault(); setToken(input.value.trim()); show(); }},
    input, h('button', {type: 'submit', id: 'token-save'}, 'Set token'),
    h('button', {type: 'button', id: 'token-clear', onclick: () => { setToken(''); input.value = ''; show(); }}, 'Clear'));
  show();
  return [h('h1', null, 'ACL token'), h('p', null, 'With ACLs on, calls carry this token. It is kept for this tab only.'), form, info];
}

async function agentName() {
  try {
    const s = await get('/v1/agent/self');
    document.getElementById('agent-name').textContent = `${s.config.Name} · ${s.config.Region}`;
  } catch (e) { /* a denied or failing agent/self leaves the name out */ }
}

agentName();
render();
