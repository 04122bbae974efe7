// plot.js: live plots (uPlot) and the small sparklines of the nodes table.
import uPlot from './vendor/uplot/uPlot.esm.js';

const colours = ['#1d6fd8', '#d8591d', '#1f9d55', '#9d1fa0', '#c9a400', '#0aa3a3', '#c2185b', '#5d4037'];

// xRange is the span of the samples xs, at least the last minute (uPlot
// would stretch a single sample over a day of its scale).
function xRange(xs) {
  const hi = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
  return [Math.min(xs.length ? xs[0] : hi, hi - 60), hi];
}

// keep is how many samples a plot keeps: 5 minutes at one a second.
export const keep = 300;

// livePlot is a time plot of a few series that keeps the last `keep`
// samples. push(tSeconds, [values]) adds one; the element is `el`.
export function livePlot({title, labels, fmt = v => v, min, max}) {
  const el = document.createElement('figure');
  el.className = 'plot';
  el.dataset.points = '0';
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  el.append(cap);
  const data = [[], ...labels.map(() => [])];
  const opts = {
    width: 300, height: 150,
    legend: {show: labels.length > 1},
    cursor: {drag: {x: false, y: false}},
    // The x axis spans at least a minute, so the first samples do not
    // stretch over years.
    scales: {x: {time: true, range: () => xRange(data[0])}, y: {range: (u, lo, hi) => [min ?? Math.min(0, lo), max ?? (hi > 0 ? hi * 1.1 : 1)]}},
    axes: [{}, {values: (u, ticks) => ticks.map(fmt), size: 70}],
    series: [{}, ...labels.map((l, i) => ({label: l, stroke: colours[i % colours.length], width: 1.5, value: (u, v) => v == null ? '–' : fmt(v)}))],
  };
  let plot = null;
  const ro = new ResizeObserver(() => {
    const w = Math.max(200, el.clientWidth - 8);
    if (!plot) {
      opts.width = w;
      plot = new uPlot(opts, data, el);
    } else if (plot.width !== w) {
      plot.setSize({width: w, height: opts.height});
    }
  });
  ro.observe(el);
  return {
    el,
    push(t, values) {
      data[0].push(t);
      values.forEach((v, i) => data[i + 1] && data[i + 1].push(v));
      if (data[0].length > keep) data.forEach(s => s.shift());
      el.dataset.points = String(data[0].length);
      if (plot) plot.setData(data);
    },
    destroy() { ro.disconnect(); if (plot) plot.destroy(); },
  };
}

// sparkline is an SVG line of the last values, 0 to 100.
export function sparkline(values, label) {
  const w = 80, hgt = 20;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('width', w);
  svg.setAttribute('height', hgt);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  const last = values.length ? values[values.length - 1] : null;
  svg.setAttribute('aria-label', label + ': ' + (last == null ? 'no data' : last.toFixed(1) + '%'));
  if (values.length > 1) {
    const step = w / (keepSpark - 1);
    const x0 = w - step * (values.length - 1);
    const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(hgt - 1 - (Math.min(100, Math.max(0, v)) / 100) * (hgt - 2)).toFixed(1)}`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  return svg;
}

// keepSpark is how many samples a sparkline shows.
export const keepSpark = 30;
