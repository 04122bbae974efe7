// logs.js: a task's live log tail (fs/logs with format=sse) and an
// agent's monitor (agent/monitor, plain lines), on one log pane.
import {h, short} from './dom.js';
import {request, q, enc, sse, readStream, isAbort} from './api.js';
import {errorBox, allocLink, nodeLink, crumbs, link} from './view.js';

// maxLines is how many lines a pane keeps; older ones go.
const maxLines = 10000;

// logPane is the output with filter, wrap, clear and pause. connect(signal,
// resume) streams into pane.add until it ends or signal aborts; pause
// aborts it and resume calls it again with resume = true.
function logPane(ctx, connect, extra = []) {
  const lines = [];
  const out = h('pre', {id: 'log', class: 'log wrap', tabindex: '0', 'aria-label': 'Log output'});
  const status = h('div', {id: 'log-status', class: 'status', 'aria-live': 'polite'});
  const filter = h('input', {type: 'search', id: 'log-filter', placeholder: 'Filter lines', 'aria-label': 'Filter lines'});
  const wrap = h('input', {type: 'checkbox', id: 'log-wrap', checked: true});
  const pause = h('button', {type: 'button', id: 'log-pause'}, 'Pause');
  let ctl = null;
  let paused = false;

  const matches = l => !filter.value || l.includes(filter.value);
  const atBottom = () => out.scrollHeight - out.scrollTop - out.clientHeight < 40;
  const pane = {
    status,
    add(line) {
      lines.push(line);
      if (lines.length > maxLines) { lines.shift(); if (out.firstChild) out.firstChild.remove(); }
      if (!matches(line)) return;
      const stick = atBottom();
      out.append(line + '\n');
      if (stick) out.scrollTop = out.scrollHeight;
    },
    say(text, cls) { status.replaceChildren(h('span', {class: cls || ''}, text)); },
    fail(err) { status.replaceChildren(errorBox(err)); },
    async start(resume) {
      if (ctl) ctl.abort();
      ctl = new AbortController();
      const signal = AbortSignal.any([ctx.signal, ctl.signal]);
      try {
        await connect(signal, resume);
      } catch (e) {
        if (!isAbort(e)) pane.fail(e);
      }
    },
  };
  const rerender = () => { out.replaceChildren(lines.filter(matches).join('\n') + (lines.length ? '\n' : '')); out.scrollTop = out.scrollHeight; };
  filter.addEventListener('input', rerender);
  wrap.addEventListener('change', () => out.classList.toggle('wrap', wrap.checked));
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (paused) { if (ctl) ctl.abort(); pane.say('Paused'); } else pane.start(true);
  });
  const clear = h('button', {type: 'button', id: 'log-clear', onclick: () => { lines.length = 0; out.replaceChildren(); }}, 'Clear');
  pane.el = [h('div', {class: 'toolbar'}, ...extra, pause, clear, filter, h('label', null, wrap, ' Wrap')), status, out];
  pane.restart = () => { paused = false; pause.textContent = 'Pause'; lines.length = 0; out.replaceChildren(); pane.start(false); };
  return pane;
}

// endText says how a task ended, from a logs end record.
function endText(end) {
  const parts = [`Task ${end.state || 'ended'}`];
  if (end.exit_code != null) parts.push(`exit code ${end.exit_code}`);
  if (end.signal) parts.push(`signal ${end.signal}`);
  if (end.failed) parts.push('failed');
  return parts.join(', ') + (end.finished_at ? ` at ${new Date(end.finished_at).toLocaleString()}` : '');
}

// taskLogs is /ui/allocations/:alloc_id/:task/logs.
export function taskLogs(ctx) {
  const [id, task] = ctx.params;
  const type = h('select', {id: 'log-type', 'aria-label': 'Stream'}, h('option', {value: 'stdout'}, 'stdout'), h('option', {value: 'stderr'}, 'stderr'));
  const lines = h('input', {type: 'number', id: 'log-lines', min: 0, max: 100000, value: 100, 'aria-label': 'Start from the last N lines', class: 'num'});
  const follow = h('input', {type: 'checkbox', id: 'log-follow', checked: true});
  let pos = null; // the last record's position, to resume after a pause

  const connect = async (signal, resume) => {
    const n = Math.max(0, Math.min(100000, parseInt(lines.value, 10) || 0));
    const params = {task, type: type.value, format: 'sse', follow: follow.checked ? 'true' : null};
    if (resume && pos) params.after = pos; else params.lines = n;
    pane.say('Connecting');
    const res = await request(`/v1/client/fs/logs/${enc(id)}` + q(params), {signal});
    pane.say(follow.checked ? 'Following' : 'Loading');
    let ended = false;
    await sse(res, m => {
      const rec = JSON.parse(m.data);
      if (m.event === 'end' || rec.end) { ended = true; pane.say(endText(rec.end || {}), 'ended'); return; }
      if (m.event === 'error' || rec.error) { pane.fail(new Error(rec.error)); return; }
      if (m.event === 'file' || rec.event) { pane.add(`[${rec.event}]`); return; }
      if (rec.pos) pos = rec.pos;
      if (rec.line != null) pane.add(rec.line);
    });
    if (!ended && !signal.aborted) pane.say(follow.checked ? 'The stream ended' : `The last ${n} lines`);
  };
  const pane = logPane(ctx, connect, [type, h('label', null, 'Last ', lines, ' lines'), h('label', null, follow, ' Follow')]);
  for (const el of [type, lines, follow]) el.addEventListener('change', () => { pos = null; pane.restart(); });
  pane.start(false);
  return [
    crumbs(allocLink(id, short(id)), task, 'logs'),
    h('h1', null, `${task} logs`),
    h('p', {class: 'links'}, link(`/ui/allocations/${enc(id)}/${enc(task)}/fs/`, 'Task files')),
    ...pane.el,
  ];
}

// monitor is /ui/clients/:node_id/monitor: the agent's log through the servers.
export function monitor(ctx) {
  const [id] = ctx.params;
  const level = h('select', {id: 'monitor-level', 'aria-label': 'Level'}, ['info', 'debug', 'trace', 'warn', 'error'].map(l => h('option', {value: l}, l)));
  const connect = async signal => {
    pane.say('Connecting');
    const res = await request('/v1/agent/monitor' + q({node_id: id, log_level: level.value, plain: 'true'}), {signal});
    pane.say('Streaming');
    let buf = '';
    await readStream(res, chunk => {
      buf += chunk;
      const parts = buf.split('\n');
      buf = parts.pop();
      parts.forEach(l => pane.add(l));
    });
    if (!signal.aborted) pane.say('The stream ended');
  };
  const pane = logPane(ctx, connect, [h('label', null, 'Level ', level)]);
  level.addEventListener('change', () => pane.restart());
  pane.start(false);
  return [crumbs(link('/ui/clients', 'Clients'), nodeLink(id, short(id)), 'monitor'), h('h1', null, 'Agent log'), ...pane.el];
}
