// nodes.js: the clients table with live sparklines, and one client's page.
import {h, table, kv, bytes, pct, short, badge, section} from './dom.js';
import {get, post, q, enc, poll, isAbort} from './api.js';
import {livePlot, sparkline, keepSpark} from './plot.js';
import {fill, swap, errorBox, notFound, nodeLink, allocLink, jobLink, crumbs} from './view.js';

// hostFigures are the three percentages a sparkline shows.
function hostFigures(s) {
  const cpus = s.CPU || [];
  const cpu = cpus.length ? cpus.reduce((a, c) => a + (c.Total || 0), 0) / cpus.length : null;
  const mem = s.Memory && s.Memory.Total ? 100 * s.Memory.Used / s.Memory.Total : null;
  const disk = s.AllocDirStats ? s.AllocDirStats.UsedPercent : (s.DiskStats && s.DiskStats[0] ? s.DiskStats[0].UsedPercent : null);
  return {cpu, mem, disk};
}

const drivers = n => Object.entries(n.Drivers || {}).filter(([, d]) => d.Detected && d.Healthy).map(([k]) => k).sort().join(', ');

// clients is /ui/clients. The list and the allocation counts are two
// server calls per refresh; each ready node shown gets one forwarded
// /v1/client/stats call per refresh, every 2 s at most, and none while
// the tab is hidden (poll).
export function clients(ctx) {
  const {signal} = ctx;
  const filter = h('input', {type: 'search', id: 'node-filter', placeholder: 'Filter by name, ID, datacenter', 'aria-label': 'Filter clients'});
  const status = h('select', {id: 'node-status', 'aria-label': 'Status'},
    ['', 'ready', 'initializing', 'down', 'disconnected'].map(s => h('option', {value: s}, s || 'Any status')));
  const body = h('div', {class: 'nodes'}, h('p', {class: 'muted'}, 'Loading…'));
  const spark = new Map(); // node ID -> {cpu: [], mem: [], disk: []}
  let nodes = null, counts = {}, err = null;

  const shown = () => (nodes || []).filter(n => {
    const f = filter.value.trim().toLowerCase();
    return (!status.value || n.Status === status.value) &&
      (!f || [n.Name, n.ID, n.Datacenter, n.NodePool].some(x => (x || '').toLowerCase().includes(f)));
  });

  const render = () => {
    if (err) { body.replaceChildren(errorBox(err)); return; }
    if (!nodes) return;
    const rows = shown().map(n => {
      const s = spark.get(n.ID) || {cpu: [], mem: [], disk: []};
      return {attrs: {'data-node': n.ID}, cells: [
        nodeLink(n.ID, n.Name), {text: short(n.ID), class: 'wide mono'}, {text: n.Datacenter, class: 'wide'},
        badge(n.Status), {text: drivers(n), class: 'wide'}, String(counts[n.ID] || 0),
        h('span', {class: 'sparkcell'}, sparkline(s.cpu, 'CPU'), pct(s.cpu.at(-1))),
        h('span', {class: 'sparkcell'}, sparkline(s.mem, 'Memory'), pct(s.mem.at(-1))),
        {text: h('span', {class: 'sparkcell'}, sparkline(s.disk, 'Disk'), pct(s.disk.at(-1))), class: 'wide'},
      ]};
    });
    swap(body, [table(
      ['Name', {text: 'ID', class: 'wide'}, {text: 'Datacenter', class: 'wide'}, 'Status', {text: 'Drivers', class: 'wide'}, 'Allocs', 'CPU', 'Memory', {text: 'Disk', class: 'wide'}],
      rows, {empty: nodes.length ? 'No client matches the filter' : 'No clients', class: 'nodes-table'})]);
  };
  filter.addEventListener('input', render);
  status.addEventListener('change', render);

  poll(signal, 2000, async () => {
    try {
      const [ns, allocs] = await Promise.all([
        get('/v1/nodes', {signal}),
        get('/v1/allocations' + q({task_states: 'false'}), {signal}).catch(e => { if (isAbort(e)) throw e; return []; }),
      ]);
      nodes = ns.sort((a, b) => a.Name.localeCompare(b.Name));
      counts = {};
      for (const a of allocs) if (a.ClientStatus === 'running' || a.ClientStatus === 'pending') counts[a.NodeID] = (counts[a.NodeID] || 0) + 1;
      err = null;
    } catch (e) {
      if (isAbort(e)) throw e;
      err = e;
      render();
      return;
    }
    await Promise.all(shown().filter(n => n.Status === 'ready').map(async n => {
      try {
        const f = hostFigures(await get('/v1/client/stats' + q({node_id: n.ID}), {signal}));
        const s = spark.get(n.ID) || {cpu: [], mem: [], disk: []};
        for (const k of ['cpu', 'mem', 'disk']) { s[k].push(f[k]); if (s[k].length > keepSpark) s[k].shift(); }
        spark.set(n.ID, s);
      } catch (e) { if (isAbort(e)) throw e; }
    }));
    render();
  });

  return [h('h1', null, 'Clients'), h('div', {class: 'toolbar'}, filter, status), body];
}

// client is /ui/clients/:node_id.
export async function client(ctx) {
  const {signal, params: [id]} = ctx;
  let node;
  try {
    node = await get('/v1/node/' + enc(id), {signal});
  } catch (e) {
    if (e.notFound || e.status === 400) return notFound('No client has the ID ' + id + '.');
    if (isAbort(e)) return [];
    return [h('h1', null, 'Client ' + short(id)), errorBox(e)];
  }
  const plots = h('div', {class: 'plots'});
  const meta = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
  const allocs = h('div', null, h('p', {class: 'muted'}, 'Loading…'));
  const attrs = Object.entries(node.Attributes || {}).sort(([a], [b]) => a.localeCompare(b));

  livePlots(ctx, id, plots);
  metadataEditor(ctx, id, meta);
  fill(allocs, () => get('/v1/node/' + enc(id) + '/allocations', {signal}), list => allocTable(list, {node: false}));

  return [
    crumbs(h('a', {href: '/ui/clients'}, 'Clients'), node.Name),
    h('h1', null, node.Name, ' ', badge(node.Status)),
    kv([['ID', h('span', {class: 'mono'}, node.ID)], ['Datacenter', node.Datacenter], ['Node pool', node.NodePool],
      ['Address', node.HTTPAddr || node.Address || '–'], ['Drivers', drivers(node) || '–'],
      ['Eligibility', node.SchedulingEligibility], ['Monitor', h('a', {href: '/ui/clients/' + enc(id) + '/monitor'}, 'Agent log')]]),
    section('Resources', plots),
    section('Allocations', allocs),
    section('Metadata', meta),
    h('details', null, h('summary', null, `Attributes (${attrs.length})`), table(['Name', 'Value'], attrs.map(([k, v]) => ({cells: [k, v]})))),
  ];
}

// livePlots polls the node's host stats every second into per-core CPU,
// memory and disk plots that keep 5 minutes.
function livePlots(ctx, id, el) {
  const {signal} = ctx;
  let cpu = null, mem = null, disk = null;
  signal.addEventListener('abort', () => [cpu, mem, disk].forEach(p => p && p.destroy()));
  poll(signal, 1000, async () => {
    let s;
    try {
      s = await get('/v1/client/stats' + q({node_id: id}), {signal});
    } catch (e) {
      if (isAbort(e)) throw e;
      el.replaceChildren(errorBox(e));
      cpu = mem = disk = null;
      return;
    }
    if (!cpu) {
      cpu = livePlot({title: 'CPU per core', labels: (s.CPU || []).map(c => c.CPU), fmt: v => v.toFixed(0) + '%', min: 0, max: 100});
      mem = livePlot({title: 'Memory used', labels: ['used'], fmt: bytes, min: 0, max: s.Memory ? s.Memory.Total : undefined});
      disk = livePlot({title: 'Alloc dir disk used', labels: ['used'], fmt: v => v.toFixed(0) + '%', min: 0, max: 100});
      cpu.el.id = 'plot-cpu';
      el.replaceChildren(cpu.el, mem.el, disk.el);
    }
    const t = s.Timestamp / 1e9;
    const f = hostFigures(s);
    cpu.push(t, (s.CPU || []).map(c => c.Total));
    mem.push(t, [s.Memory ? s.Memory.Used : null]);
    disk.push(t, [f.disk]);
  });
}

// metadataEditor shows Static, Dynamic and merged Meta and sets or
// unsets dynamic keys with POST /v1/client/metadata (null unsets).
function metadataEditor(ctx, id, el) {
  const {signal} = ctx;
  const path = '/v1/client/metadata' + q({node_id: id});
  const load = () => fill(el, () => get(path, {signal}), m => build(m));
  const apply = async (meta, status) => {
    try {
      await post(path, {Meta: meta}, {signal});
      await load();
    } catch (e) {
      if (!isAbort(e)) status.replaceChildren(errorBox(e));
    }
  };
  const build = m => {
    const keys = [...new Set([...Object.keys(m.Static || {}), ...Object.keys(m.Dynamic || {}), ...Object.keys(m.Meta || {})])].sort();
    const status = h('div', {class: 'status', 'aria-live': 'polite'});
    const key = h('input', {id: 'meta-key', required: true, placeholder: 'key', 'aria-label': 'Key', maxlength: 256});
    const value = h('input', {id: 'meta-value', placeholder: 'value', 'aria-label': 'Value'});
    const form = h('form', {class: 'toolbar', onsubmit: ev => { ev.preventDefault(); if (key.value) apply({[key.value]: value.value}, status); }},
      key, value, h('button', {type: 'submit', id: 'meta-set'}, 'Set'));
    const cell = (obj, k) => obj && k in obj ? obj[k] : h('span', {class: 'muted'}, '–');
    return [
      table(['Key', {text: 'Static', class: 'wide'}, 'Dynamic', 'Meta', ''], keys.map(k => ({attrs: {'data-key': k}, cells: [
        h('span', {class: 'mono'}, k), {text: cell(m.Static, k), class: 'wide'}, cell(m.Dynamic, k), cell(m.Meta, k),
        m.Dynamic && k in m.Dynamic ? h('button', {type: 'button', class: 'small', onclick: () => apply({[k]: null}, status)}, 'Unset') : '',
      ]})), {class: 'meta-table'}),
      form, status,
    ];
  };
  load();
}

// allocTable lists allocations, with the node or the job column.
export function allocTable(list, {node = true, job = true} = {}) {
  list = [...list].sort((a, b) => (b.CreateIndex || 0) - (a.CreateIndex || 0));
  return table(
    ['ID', 'Name', job ? {text: 'Job', class: 'wide'} : null, node ? {text: 'Client', class: 'wide'} : null, 'Status', {text: 'Desired', class: 'wide'}].filter(Boolean),
    list.map(a => ({attrs: {'data-alloc': a.ID}, cells: [
      allocLink(a.ID, short(a.ID)), a.Name,
      job ? {text: jobLink(a.JobID, a.Namespace, a.JobID), class: 'wide'} : null,
      node ? {text: nodeLink(a.NodeID, a.NodeName || short(a.NodeID)), class: 'wide'} : null,
      badge(a.ClientStatus), {text: a.DesiredStatus, class: 'wide'},
    ].filter(c => c !== null)})), {empty: 'No allocations'});
}

