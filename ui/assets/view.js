// view.js: what every view shares: errors shown where the data would be,
// the not-found view, links.
import {h} from './dom.js';
import {isAbort} from './api.js';

// errorBox is what a failed call shows in its place: a denial reads
// "Permission denied" (Nomad's text), anything else its message.
export function errorBox(err) {
  const text = err.denied ? 'Permission denied' : (err.message || String(err));
  const box = h('div', {class: 'error', role: 'alert'}, text);
  if (err.denied) box.append(' ', h('a', {href: '/ui/settings/tokens'}, 'Set a token'));
  return box;
}

// swap replaces el's content with nodes, keeping the keyboard focus on
// the same link or control if it was inside: the polled tables are
// rebuilt on each refresh, and a keyboard user must not lose their place.
export function swap(el, nodes) {
  const active = document.activeElement;
  let sel = null;
  if (active && active !== el && el.contains(active)) {
    if (active.id) sel = '#' + CSS.escape(active.id);
    else if (active.getAttribute('href')) sel = `[href="${CSS.escape(active.getAttribute('href'))}"]`;
  }
  el.replaceChildren(...nodes);
  if (sel) {
    const again = el.querySelector(sel);
    if (again) again.focus({preventScroll: true});
  }
}

// fill replaces el's content with what build returns from the awaited
// call, or with the error; a call aborted by leaving the view does nothing.
export async function fill(el, call, build) {
  try {
    const v = await call();
    swap(el, [].concat(build(v)));
    return v;
  } catch (err) {
    if (isAbort(err)) return undefined;
    el.replaceChildren(errorBox(err));
    return undefined;
  }
}

export function notFound(what) {
  return h('div', {class: 'notfound'}, h('h1', null, 'Not found'),
    h('p', null, what || 'There is nothing at this address.'),
    h('p', null, h('a', {href: '/ui/clients'}, 'Back to the clients')));
}

export function link(href, text) { return h('a', {href}, text); }

export const nodeLink = (id, text) => link('/ui/clients/' + encodeURIComponent(id), text);
export const allocLink = (id, text) => link('/ui/allocations/' + encodeURIComponent(id), text);
export const jobLink = (id, ns, text) => link('/ui/jobs/' + encodeURIComponent(id) + (ns && ns !== 'default' ? '@' + encodeURIComponent(ns) : ''), text);

// crumbs is the trail at the top of a page.
export function crumbs(...parts) {
  return h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumb'},
    parts.map((p, i) => [i ? h('span', {'aria-hidden': 'true'}, ' / ') : null, p]));
}
