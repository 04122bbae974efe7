// allocs.js: jobs, allocations and one allocation's page.
import {h, table, kv, bytes, time, short, badge, section} from './dom.js';
import {get, post, request, q, enc, poll, isAbort} from './api.js';
import {livePlot} from './plot.js';
import {fill, swap, errorBox, notFound, nodeLink, jobLink, link, crumbs} from './view.js';
import {allocTable} from './nodes.js';

export function jobs(ctx) {
  const body = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
  poll(ctx.signal, 5000, () => fill(body, () => get('/v1/jobs', {signal: ctx.signal}), list => table(
    ['Name', {text: 'Namespace', class: 'wide'}, {text: 'Type', class: 'wide'}, 'Status', {text: 'Groups', class: 'wide'}],
    list.map(j => ({cells: [jobLink(j.ID, j.Namespace, j.Name || j.ID), {text: j.Namespace, class: 'wide'}, {text: j.Type, class: 'wide'},
      badge(j.Status), {text: Object.keys((j.JobSummary || {}).Summary || {}).length, class: 'wide'}]})), {empty: 'No jobs'})));
  return [h('h1', null, 'Jobs'), body];
}

// job is /ui/jobs/:job_id, the ID optionally @namespace as Nomad's UI has it.
export async function job(ctx) {
  const {signal} = ctx;
  let [id] = ctx.params;
  let ns = '';
  const at = id.lastIndexOf('@');
  if (at > 0) { ns = id.slice(at + 1); id = id.slice(0, at); }
  let j;
  try {
    j = await get('/v1/job/' + enc(id) + q({namespace: ns}), {signal});
  } catch (e) {
    if (e.notFound) return notFound('No job has the ID ' + id + '.');
    if (isAbort(e)) return [];
    return [h('h1', null, 'Job ' + id), errorBox(e)];
  }
  const allocs = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
  poll(signal, 3000, () => fill(allocs, () => get('/v1/job/' + enc(id) + '/allocations' + q({namespace: ns}), {signal}), l => allocTable(l, {job: false})));
  return [
    crumbs(link('/ui/jobs', 'Jobs'), j.Name || j.ID),
    h('h1', null, j.Name || j.ID, ' ', badge(j.Status)),
    kv([['Namespace', j.Namespace], ['Type', j.Type], ['Priority', j.Priority], ['Datacenters', (j.Datacenters || []).join(', ')],
      ['Version', j.Version], ['Groups', (j.TaskGroups || []).map(g => `${g.Name} ×${g.Count}`).join(', ')]]),
    section('Allocations', allocs),
  ];
}

export function allocations(ctx) {
  const body = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
  poll(ctx.signal, 3000, () => fill(body, () => get('/v1/allocations', {signal: ctx.signal}), l => allocTable(l)));
  return [h('h1', null, 'Allocations'), body];
}

const live = s => s === 'running' || s === 'pending';

// allocation is /ui/allocations/:alloc_id (and /:task, the same page).
export async function allocation(ctx) {
  const {signal, params: [id]} = ctx;
  let a;
  try {
    a = await get('/v1/allocation/' + enc(id), {signal});
  } catch (e) {
    if (e.notFound || e.status === 400) return notFound('No allocation has the ID ' + id + '.');
    if (isAbort(e)) return [];
    return [h('h1', null, 'Allocation ' + short(id)), errorBox(e)];
  }
  const tasks = Object.keys(a.TaskStates || {}).sort();
  const states = h('div', null);
  const plots = h('div', {class: 'plots'});
  const status = h('div', {class: 'status', 'aria-live': 'polite'});
  const renderStates = al => tasks.map(t => {
    const st = al.TaskStates[t];
    return h('article', {class: 'task', 'data-task': t},
      h('h3', null, t, ' ', badge(st.State), st.Failed ? h('span', {class: 'badge s-failed'}, 'failed') : null),
      h('p', {class: 'links'}, link(`/ui/allocations/${enc(id)}/${enc(t)}/logs`, 'Logs'), ' · ',
        link(`/ui/allocations/${enc(id)}/${enc(t)}/fs/`, 'Files'),
        ` · started ${time(st.StartedAt)}`, st.FinishedAt && !st.FinishedAt.startsWith('0001') ? ` · finished ${time(st.FinishedAt)}` : '',
        ` · restarts ${st.Restarts || 0}`),
      table(['Time', 'Type', 'Description'], [...(st.Events || [])].reverse().map(ev => ({cells: [
        time(ev.Time), ev.Type, ev.DisplayMessage || ev.Message || ev.DriverError || '']})), {empty: 'No events'}));
  });
  const headerOf = al => [al.Name, ' ', badge(al.ClientStatus)];
  const header = h('span', null, ...headerOf(a));
  states.replaceChildren(...renderStates(a));
  poll(signal, 3000, async () => {
    try {
      a = await get('/v1/allocation/' + enc(id), {signal});
      swap(states, renderStates(a));
      header.replaceChildren(...headerOf(a));
    } catch (e) { if (isAbort(e)) throw e; }
  });
  taskPlots(ctx, id, tasks, plots, () => live(a.ClientStatus));

  const confirmDialog = h('dialog', {id: 'confirm'});
  const confirm = (text, action) => {
    const yes = h('button', {type: 'button', id: 'confirm-yes', class: 'danger', onclick: async () => {
      confirmDialog.close();
      try { await action(); status.replaceChildren(h('div', {class: 'ok'}, 'Done.')); } catch (e) { if (!isAbort(e)) status.replaceChildren(errorBox(e)); }
    }}, 'Yes');
    confirmDialog.replaceChildren(h('p', null, text), h('div', {class: 'toolbar'}, yes,
      h('button', {type: 'button', onclick: () => confirmDialog.close()}, 'Cancel')));
    confirmDialog.showModal();
    yes.focus();
  };
  return [
    crumbs(link('/ui/jobs', 'Jobs'), jobLink(a.JobID, a.Namespace, a.JobID), short(a.ID)),
    h('h1', null, header),
    kv([['ID', h('span', {class: 'mono'}, a.ID)], ['Job', jobLink(a.JobID, a.Namespace, a.JobID)], ['Group', a.TaskGroup],
      ['Client', nodeLink(a.NodeID, a.NodeName || short(a.NodeID))], ['Desired', a.DesiredStatus],
      ['Description', a.ClientDescription || '–'], ['Files', link(`/ui/allocations/${enc(id)}/fs/`, 'Browse')]]),
    h('div', {class: 'toolbar'},
      h('button', {type: 'button', id: 'alloc-stop', class: 'danger', onclick: () => confirm(`Stop allocation ${short(id)}?`,
        () => post('/v1/allocation/' + enc(id) + '/stop', {}, {signal}))}, 'Stop'),
      h('button', {type: 'button', id: 'alloc-gc', onclick: () => confirm(`Garbage-collect allocation ${short(id)} on its client? Its files go.`,
        () => request('/v1/client/allocation/' + enc(id) + '/gc', {signal}))}, 'GC')),
    status, confirmDialog,
    section('Resources', plots),
    section('Tasks', states),
  ];
}

// taskPlots polls the allocation's stats every second, while it runs,
// into a CPU and a memory plot per task.
function taskPlots(ctx, id, tasks, el, running) {
  const {signal} = ctx;
  const plots = new Map();
  signal.addEventListener('abort', () => plots.forEach(p => { p.cpu.destroy(); p.mem.destroy(); }));
  if (!running()) { el.replaceChildren(h('p', {class: 'muted'}, 'The allocation is not running.')); return; }
  poll(signal, 1000, async () => {
    if (!running()) return;
    let s;
    try {
      s = await get('/v1/client/allocation/' + enc(id) + '/stats', {signal});
    } catch (e) {
      if (isAbort(e)) throw e;
      el.replaceChildren(errorBox(e));
      plots.clear();
      return;
    }
    for (const t of tasks) {
      const ts = (s.Tasks || {})[t];
      if (!ts) continue;
      let p = plots.get(t);
      if (!p) {
        p = {cpu: livePlot({title: `${t}: CPU`, labels: ['CPU'], fmt: v => v.toFixed(1) + '%', min: 0}),
          mem: livePlot({title: `${t}: memory (RSS)`, labels: ['RSS'], fmt: bytes, min: 0})};
        p.cpu.el.dataset.task = t;
        plots.set(t, p);
        if (plots.size === 1) el.replaceChildren();
        el.append(p.cpu.el, p.mem.el);
      }
      const u = ts.ResourceUsage || {};
      const tsec = (ts.Timestamp || s.Timestamp) / 1e9;
      p.cpu.push(tsec, [(u.CpuStats || {}).Percent]);
      p.mem.push(tsec, [(u.MemoryStats || {}).RSS]);
    }
  });
}
