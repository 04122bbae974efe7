// api.js: the calls of the public HTTP API, as the Go client makes them.
// The token is kept in sessionStorage and sent as X-Nomad-Token.

const tokenKey = 'tether.token';

export function token() { return sessionStorage.getItem(tokenKey) || ''; }
export function setToken(t) {
  if (t) sessionStorage.setItem(tokenKey, t); else sessionStorage.removeItem(tokenKey);
}

// ApiError is an answer other than 2xx: its status and Nomad's text.
export class ApiError extends Error {
  constructor(status, text) {
    super(text || ('HTTP ' + status));
    this.status = status;
  }
  get denied() { return this.status === 403; }
  get notFound() { return this.status === 404; }
}

function headers(extra) {
  const hd = new Headers(extra || {});
  const t = token();
  if (t) hd.set('X-Nomad-Token', t);
  return hd;
}

// request sends one call and returns the Response, or throws ApiError.
export async function request(path, {method = 'GET', body, signal, hdrs} = {}) {
  const res = await fetch(path, {
    method, signal, headers: headers(hdrs),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new ApiError(res.status, (await res.text()).trim());
  return res;
}

export async function get(path, opts) { return (await request(path, opts)).json(); }

export async function post(path, body, opts = {}) {
  const res = await request(path, {...opts, method: 'POST', body});
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// q builds a query string from the defined values.
export function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') s.set(k, v);
  const str = s.toString();
  return str ? '?' + str : '';
}

export const enc = encodeURIComponent;

// isAbort tells a call cancelled by leaving the view from a failure.
export function isAbort(err) { return err && err.name === 'AbortError'; }

// readStream calls onChunk with each decoded piece of a streamed answer
// until it ends or signal aborts.
export async function readStream(res, onChunk) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  try {
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      onChunk(dec.decode(value, {stream: true}));
    }
  } finally {
    reader.releaseLock();
  }
}

// sse reads a text/event-stream answer, calling onEvent({event, data, id})
// per message. EventSource cannot send the token header, hence fetch.
export async function sse(res, onEvent) {
  let buf = '';
  await readStream(res, chunk => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const msg = {event: 'message', data: '', id: null};
      const data = [];
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') msg.event = value;
        else if (field === 'id') msg.id = value;
      }
      if (!data.length) continue;
      msg.data = data.join('\n');
      onEvent(msg);
    }
  });
}

// poll runs fn now and again every ms after it finishes, never while the
// tab is hidden, until signal aborts. At most one run is in flight, so a
// slow answer never piles calls up.
export function poll(signal, ms, fn) {
  let timer = null;
  let running = false;
  const run = async () => {
    timer = null;
    if (signal.aborted || document.hidden || running) return;
    running = true;
    try { await fn(); } catch (err) { if (!isAbort(err)) console.warn('poll:', err.message); }
    running = false;
    if (!signal.aborted && !document.hidden) timer = setTimeout(run, ms);
  };
  const onVisible = () => { if (!document.hidden && !timer && !running) run(); };
  document.addEventListener('visibilitychange', onVisible);
  signal.addEventListener('abort', () => {
    if (timer) clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisible);
  });
  run();
}

// download saves an answer as a file. Without a token a plain link
// streams it; with one the bytes go through a Blob, since a link cannot
// carry the header.
export async function download(path, name, signal) {
  const a = document.createElement('a');
  a.download = name;
  if (!token()) {
    a.href = path;
    a.click();
    return;
  }
  const res = await request(path, {signal});
  const url = URL.createObjectURL(await res.blob());
  a.href = url;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
