// baton dashboard: the page at /mod/dashboard/.
//
// Framework-free on purpose, with no build step. The page renders one table,
// one detail pane and one event feed; plain DOM calls with keyed row updates
// do that in a few hundred lines. Without a build step the files in
// dashboard/ are exactly the bytes the binary serves (src/http/dashboard.rs
// compiles them in with include_bytes!), so there is no generated output to
// keep in sync, no toolchain to install before `cargo build`, no third-party
// code shipped inside baton, and BATON_DASHBOARD_DIR=dashboard serves edits
// on the next reload.
//
// Data flow: the page uses only the HTTP/JSON gateway, like any client.
//   - GET /v1/lock/watch?key=PREFIX&prefix=true as Server-Sent Events is the
//     only live source: every event carries the key's holder and queue length
//     after the change, so list rows update in place. No polling loop. It is
//     read with fetch() rather than EventSource, which cannot send the
//     Authorization header.
//   - With baton --auth-file, the first 401 opens a dialog that asks for a
//     token once; it is kept in sessionStorage (gone when the tab closes) and
//     sent as `Authorization: Bearer` with every call. The server filters
//     lists and the watch, so the page shows only what the token may read.
//   - POST /v1/lock/list pages through keys (never every key's detail).
//   - POST /v1/lock/get loads the selected key, again after each of its events.
//   - POST /v1/lock/release releases after a confirmation dialog.
//   - GET /v1/status: on load, after events (throttled) and every 30 s.
// On every (re)connection of the watch the page takes a fresh snapshot and
// replays the events that arrived meanwhile: each event states the key's
// whole row, so replaying them after the snapshot converges.
'use strict';

(() => {
  const PAGE_TOKEN_FIRST = '';
  const FEED_LIMIT = 200;
  const STATUS_MIN_INTERVAL_MS = 1000;
  const STATUS_SLOW_INTERVAL_MS = 30000;
  const TICK_MS = 200;
  const KIND_LABELS = {
    EVENT_KIND_QUEUED: 'queued',
    EVENT_KIND_ACQUIRED: 'acquired',
    EVENT_KIND_RENEWED: 'renewed',
    EVENT_KIND_RELEASED: 'released',
    EVENT_KIND_EXPIRED: 'expired',
    EVENT_KIND_CANCELLED: 'cancelled',
    EVENT_KIND_DELAY_ENDED: 'delay ended',
  };

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  /** Builds an element: el('td', {class: 'num'}, 'text', childNode). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'dataset') Object.assign(node.dataset, v);
        else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? '' : v);
      }
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  /** A proto3 JSON 64-bit integer (a string, or absent for 0) as a number. */
  const num = (v) => (v === undefined || v === null || v === '' ? 0 : Number(v));

  /** Orders keys as the server does (by Unicode code point, like Rust's str). */
  function cmpKeys(a, b) {
    if (a === b) return 0;
    const ia = a[Symbol.iterator]();
    const ib = b[Symbol.iterator]();
    for (;;) {
      const x = ia.next();
      const y = ib.next();
      if (x.done) return y.done ? 0 : -1;
      if (y.done) return 1;
      const cx = x.value.codePointAt(0);
      const cy = y.value.codePointAt(0);
      if (cx !== cy) return cx < cy ? -1 : 1;
    }
  }

  /** A duration for people: "4.2s", "42s", "3m 05s", "2h 07m", "3d 04h". */
  function fmtDuration(ms) {
    if (!(ms > 0)) return '0s';
    if (ms < 10000) return `${(Math.floor(ms / 100) / 10).toFixed(1)}s`;
    let s = Math.floor(ms / 1000);
    if (s < 60) return `${s}s`;
    let m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return `${m}m ${String(s).padStart(2, '0')}s`;
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 24) return `${h}h ${String(m).padStart(2, '0')}m`;
    const d = Math.floor(h / 24);
    h %= 24;
    return `${d}d ${String(h).padStart(2, '0')}h`;
  }

  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtClock(unixMs) {
    const d = new Date(unixMs);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
  }
  function fmtDateTime(unixMs) {
    const d = new Date(unixMs);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(unixMs)}`;
  }

  /** An entry's value, or a muted "(no value)". */
  function valueNode(value) {
    return value ? el('span', { class: 'val' }, value) : el('span', { class: 'muted' }, '(no value)');
  }

  // ------------------------------------------------------------------ clock

  // The TTL counts down on the client from deadlineUnixMs. The server's clock
  // may differ from the browser's: every answer that carries a holder with
  // remainingMs tells us the server's "now" (deadline - remaining) at the
  // moment it answered, so we keep an offset estimated against the middle of
  // the request's round trip.
  const clock = {
    offset: 0,
    fromFetch: false,
    observeHolder(holder, t0, t1) {
      if (!holder) return;
      const deadline = num(holder.deadlineUnixMs);
      const remaining = num(holder.remainingMs);
      if (deadline > 0 && remaining > 0) {
        this.offset = deadline - remaining - (t0 + t1) / 2;
        this.fromFetch = true;
      }
    },
    observeEvent(atUnixMs) {
      // Only a fallback: an event is seen a little after it happened.
      if (!this.fromFetch && atUnixMs > 0) this.offset = atUnixMs - Date.now();
    },
    now() {
      return Date.now() + this.offset;
    },
  };

  /** Milliseconds a holder has left now, or null if it never expires. */
  function remainingOf(holder) {
    const deadline = num(holder.deadlineUnixMs);
    if (!deadline || !num(holder.ttlMs)) return null;
    return Math.max(0, deadline - clock.now());
  }

  // -------------------------------------------------------------------- api

  class ApiError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // ------------------------------------------------------------------ token

  const TOKEN_KEY = 'baton.token';
  const auth = {
    token: (() => {
      try {
        return sessionStorage.getItem(TOKEN_KEY) || '';
      } catch {
        return '';
      }
    })(),
  };

  /** Headers with the token, when there is one. */
  function withToken(headers) {
    return auth.token ? { ...headers, Authorization: `Bearer ${auth.token}` } : headers;
  }

  /**
   * Asks for a token (once: a dialog already open stays as it is). A token
   * the server refused is forgotten.
   */
  function askToken(message) {
    if (auth.token) {
      auth.token = '';
      try {
        sessionStorage.removeItem(TOKEN_KEY);
      } catch {
        /* private mode: kept in memory only */
      }
    }
    const dialog = $('token-dialog');
    if (dialog.open) return;
    $('token-text').textContent = message;
    $('token-input').value = '';
    dialog.returnValue = '';
    dialog.showModal();
  }

  function onTokenClose() {
    const dialog = $('token-dialog');
    const token = $('token-input').value.trim();
    $('token-input').value = '';
    if (dialog.returnValue !== 'save' || !token) return;
    auth.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      /* private mode: kept in memory only */
    }
    S.retryDelay = 1000;
    connect();
  }

  /** The message a 401 gets in the dialog. */
  function tokenMessage(hadToken) {
    return hadToken
      ? 'baton refused the token. Enter a token from its --auth-file.'
      : 'This baton requires a token (--auth-file). Enter one to see the locks it may read.';
  }

  /** Calls the gateway; resolves to {data, t0, t1} or throws ApiError. */
  async function call(method, path, body) {
    const t0 = Date.now();
    const hadToken = Boolean(auth.token);
    let res;
    try {
      res = await fetch(path, {
        method,
        cache: 'no-store',
        headers: withToken(body === undefined ? { Accept: 'application/json' } : { Accept: 'application/json', 'Content-Type': 'application/json' }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(`cannot reach baton (${e.message || e})`, 0);
    }
    if (res.status === 401) askToken(tokenMessage(hadToken));
    const text = await res.text().catch(() => '');
    const t1 = Date.now();
    let data = null;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = null;
    }
    if (!res.ok) {
      const msg = data && typeof data.message === 'string' ? data.message : `HTTP ${res.status}`;
      throw new ApiError(msg, res.status, data && data.code);
    }
    if (data === null) throw new ApiError(`invalid JSON from ${path}`, res.status);
    return { data, t0, t1 };
  }

  // ------------------------------------------------------------------ state

  const S = {
    prefix: '',
    pageSize: 100,
    // One entry per page visited: the token that fetches it and the last key
    // of the page before it (exclusive lower bound), for placing new keys.
    pages: [{ token: PAGE_TOKEN_FIRST, after: null }],
    nextToken: '',
    upper: null, // last key of this page when there is a next page
    rows: new Map(), // key -> {key, holder, queueLength, flashAt}
    listState: 'loading', // loading | ready | error
    listError: '',
    listGen: 0,
    selected: null,
    detail: null, // GetResponse of the selected key
    detailState: 'idle', // idle | loading | ready | error
    detailError: '',
    detailSeq: 0,
    detailTimer: 0,
    es: null,
    conn: 'connecting', // connecting | live | reconnecting
    everLive: false,
    retryTimer: 0,
    retryDelay: 1000,
    buffer: null, // events held back while a snapshot loads
    syncGen: 0,
    events: [],
    status: null,
    statusAt: 0,
    statusFetching: false,
    statusTimer: 0,
    statusFailed: false,
    typingTimer: 0,
  };

  // ------------------------------------------------------- live connection

  function watchUrl() {
    return `/v1/lock/watch?${new URLSearchParams({ key: S.prefix, prefix: 'true' })}`;
  }

  function connect() {
    clearTimeout(S.retryTimer);
    if (S.es) S.es.abort();
    const ctl = new AbortController();
    S.es = ctl;
    setConn(S.everLive ? 'reconnecting' : 'connecting');
    readWatch(ctl).catch(() => {
      /* handled inside; an abort ends it quietly */
    });
  }

  /**
   * Reads the watch as Server-Sent Events until it ends, then schedules a
   * reconnection (unless another connection replaced this one).
   */
  async function readWatch(ctl) {
    const hadToken = Boolean(auth.token);
    let res;
    try {
      res = await fetch(watchUrl(), {
        cache: 'no-store',
        headers: withToken({ Accept: 'text/event-stream' }),
        signal: ctl.signal,
      });
    } catch {
      if (ctl !== S.es) return;
      setConn('reconnecting');
      scheduleReconnect();
      return;
    }
    if (ctl !== S.es) return;
    if (res.status === 401) {
      // Reconnects once a token is entered.
      setConn('reconnecting', 'baton requires a token.');
      askToken(tokenMessage(hadToken));
      return;
    }
    if (!res.ok || !res.body) {
      let msg = `HTTP ${res.status}`;
      try {
        msg = JSON.parse(await res.text()).message || msg;
      } catch {
        /* keep the status */
      }
      if (ctl !== S.es) return;
      setConn('reconnecting', `The event stream failed: ${msg}.`);
      scheduleReconnect();
      return;
    }
    S.everLive = true;
    S.retryDelay = 1000;
    setConn('live');
    resync();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || ctl !== S.es) break;
        buf += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (!onSse(ctl, block)) return;
        }
      }
    } catch {
      /* dropped or aborted: below */
    }
    if (ctl !== S.es) return;
    setConn('reconnecting');
    scheduleReconnect();
  }

  /** Handles one SSE block; false when the stream failed and is closed. */
  function onSse(ctl, block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue; // keep-alive comment
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return true;
    const text = data.join('\n');
    if (event === 'error') {
      // `event: error` from the gateway: the watch itself failed.
      let msg = text;
      try {
        msg = JSON.parse(text).message || msg;
      } catch {
        /* keep the raw text */
      }
      ctl.abort();
      setConn('reconnecting', `The event stream failed: ${msg}.`);
      scheduleReconnect();
      return false;
    }
    let ev;
    try {
      ev = JSON.parse(text);
    } catch {
      return true;
    }
    onEvent(ev);
    return true;
  }

  function scheduleReconnect() {
    clearTimeout(S.retryTimer);
    const delay = S.retryDelay;
    S.retryDelay = Math.min(S.retryDelay * 2, 15000);
    S.retryTimer = setTimeout(connect, delay);
  }

  function setConn(conn, why) {
    S.conn = conn;
    const pill = $('conn');
    pill.className = `conn conn-${conn}`;
    $('conn-text').textContent = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' }[conn];
    const banner = $('banner');
    if (conn === 'reconnecting') {
      $('banner-text').textContent = `${why || 'Lost the connection to baton.'} Reconnecting automatically; what is shown may be out of date.`;
      banner.hidden = false;
      document.body.classList.add('stale');
    } else {
      banner.hidden = true;
      document.body.classList.remove('stale');
    }
  }

  /** A fresh snapshot of everything shown, then the events that raced it. */
  async function resync() {
    const gen = ++S.syncGen;
    S.buffer = S.buffer || [];
    await Promise.all([loadPage(), S.selected ? loadDetail() : null, refreshStatus(true)]);
    if (gen !== S.syncGen) return;
    releaseBuffer();
  }

  function releaseBuffer() {
    const held = S.buffer || [];
    S.buffer = null;
    for (const ev of held) applyToRows(ev);
    scheduleRender();
  }

  function onEvent(ev) {
    clock.observeEvent(num(ev.atUnixMs));
    pushFeed(ev);
    if (S.buffer) S.buffer.push(ev);
    else applyToRows(ev);
    if (ev.key === S.selected) scheduleDetail();
    scheduleStatus();
    scheduleRender();
  }

  // ------------------------------------------------------------------ list

  async function loadPage() {
    const gen = ++S.listGen;
    const page = S.pages[S.pages.length - 1];
    if (S.listState !== 'ready') S.listState = 'loading';
    scheduleRender();
    try {
      const { data, t0, t1 } = await call('POST', '/v1/lock/list', {
        prefix: S.prefix,
        pageSize: S.pageSize,
        pageToken: page.token,
      });
      if (gen !== S.listGen) return;
      const keys = Array.isArray(data.keys) ? data.keys : [];
      S.rows = new Map();
      for (const k of keys) {
        clock.observeHolder(k.holder, t0, t1);
        S.rows.set(k.key, { key: k.key, holder: k.holder || null, queueLength: num(k.queueLength), flashAt: 0 });
      }
      S.nextToken = data.nextPageToken || '';
      S.upper = S.nextToken && keys.length ? keys[keys.length - 1].key : null;
      S.listState = 'ready';
      S.listError = '';
    } catch (e) {
      if (gen !== S.listGen) return;
      S.listState = 'error';
      S.listError = e.message;
    }
    scheduleRender();
  }

  /** Reloads the list, holding back events until the new page is in. */
  async function reloadPage() {
    const gen = ++S.syncGen;
    S.buffer = S.buffer || [];
    S.listState = 'loading';
    await loadPage();
    if (gen !== S.syncGen) return;
    releaseBuffer();
  }

  function inPage(key) {
    if (!key.startsWith(S.prefix)) return false;
    const after = S.pages[S.pages.length - 1].after;
    if (after !== null && cmpKeys(key, after) <= 0) return false;
    if (S.upper !== null && cmpKeys(key, S.upper) > 0) return false;
    return true;
  }

  function applyToRows(ev) {
    if (S.listState !== 'ready') return;
    // A key in a lock-delay stays listed: nobody may take it yet.
    const inUse = Boolean(ev.holder) || num(ev.queueLength) > 0 || num(ev.delayedUntilUnixMs) > clock.now();
    const row = S.rows.get(ev.key);
    if (!inUse) {
      S.rows.delete(ev.key);
    } else if (row) {
      row.holder = ev.holder || null;
      row.queueLength = num(ev.queueLength);
      row.flashAt = Date.now();
    } else if (inPage(ev.key)) {
      S.rows.set(ev.key, { key: ev.key, holder: ev.holder || null, queueLength: num(ev.queueLength), flashAt: Date.now() });
    }
  }

  // ---------------------------------------------------------------- detail

  function select(key, { focusDetail = false } = {}) {
    if (S.selected !== key) {
      S.selected = key;
      S.detail = null;
      S.detailState = 'loading';
      writeHash();
    }
    loadDetail();
    scheduleRender();
    // Stacked layout: the detail is below the list, bring it into view.
    const stacked = window.matchMedia('(max-width: 900px)').matches;
    if (stacked) $('detail').scrollIntoView({ block: 'start' });
    if (focusDetail || stacked) $('detail-title').focus({ preventScroll: stacked });
  }

  /** Refetches the selected key soon; at most one fetch per 60 ms under a burst. */
  function scheduleDetail() {
    if (S.detailTimer) return;
    S.detailTimer = setTimeout(() => {
      S.detailTimer = 0;
      loadDetail();
    }, 60);
  }

  async function loadDetail() {
    const key = S.selected;
    if (key === null) return;
    const seq = ++S.detailSeq;
    try {
      const { data, t0, t1 } = await call('POST', '/v1/lock/get', { key });
      if (seq !== S.detailSeq || key !== S.selected) return;
      clock.observeHolder(data.holder, t0, t1);
      S.detail = data;
      S.detailState = 'ready';
      S.detailError = '';
    } catch (e) {
      if (seq !== S.detailSeq || key !== S.selected) return;
      S.detailState = 'error';
      S.detailError = e.message;
    }
    scheduleRender();
  }

  // --------------------------------------------------------------- release

  let pendingRelease = null;

  function askRelease(key, entry, isHolder) {
    pendingRelease = { key, index: entry.index, isHolder };
    $('confirm-title').textContent = isHolder ? 'Release the holder?' : 'Remove this queued entry?';
    const text = $('confirm-text');
    text.replaceChildren(
      isHolder ? 'Release the holder of ' : 'Remove the entry queued on ',
      el('strong', null, key),
      ` (index ${entry.index}, `,
      entry.value ? el('span', null, 'value ', el('strong', null, entry.value)) : 'no value',
      isHolder
        ? `). The next entry in the queue, if any, becomes holder at once, and index ${entry.index} stops being a valid fencing token.`
        : '). Everyone waiting on it is told that their request was removed.',
    );
    $('confirm-ok').textContent = isHolder ? 'Release holder' : 'Remove entry';
    const dialog = $('confirm');
    dialog.returnValue = '';
    dialog.showModal();
  }

  async function onConfirmClose() {
    const dialog = $('confirm');
    const req = pendingRelease;
    pendingRelease = null;
    if (dialog.returnValue !== 'release' || !req) return;
    // The button that opened the dialog goes away with the entry.
    $('detail-title').focus();
    try {
      const { data } = await call('POST', '/v1/lock/release', { key: req.key, index: req.index });
      notice(`Released index ${data.index || req.index} of ${req.key}${data.wasHolder ? ' (it was the holder)' : ''}.`);
    } catch (e) {
      notice(e.status === 404 ? `Index ${req.index} of ${req.key} is already gone.` : `Release failed: ${e.message}`, true);
    }
    if (req.key === S.selected) scheduleDetail();
  }

  let noticeTimer = 0;
  function notice(text, isError = false) {
    const n = $('notice');
    n.textContent = text;
    n.className = isError ? 'notice notice-error' : 'notice';
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => {
      n.hidden = true;
    }, isError ? 10000 : 5000);
  }

  // ---------------------------------------------------------------- status

  function scheduleStatus() {
    if (S.statusTimer) return;
    const wait = Math.max(0, S.statusAt + STATUS_MIN_INTERVAL_MS - Date.now());
    S.statusTimer = setTimeout(() => {
      S.statusTimer = 0;
      refreshStatus();
    }, wait);
  }

  async function refreshStatus(force) {
    if (S.statusFetching && !force) return;
    S.statusFetching = true;
    try {
      const { data } = await call('GET', '/v1/status');
      S.status = data;
      S.statusFailed = false;
    } catch {
      S.statusFailed = true;
    } finally {
      S.statusAt = Date.now();
      S.statusFetching = false;
    }
    renderStatus();
  }

  function renderStatus() {
    const st = S.status;
    $('facts').classList.toggle('stale', S.statusFailed);
    if (!st) return;
    $('f-version').textContent = st.version || '—';
    $('f-backend').textContent = st.backend || '—';
    // Over etcd: primary, follower (of the primary's URL) or electing.
    const role = $('f-role');
    role.textContent = st.role || '—';
    role.title = st.primaryUrl ? 'primary: ' + st.primaryUrl : '';
    if (st.role === 'follower' && st.primaryUrl) role.textContent = 'follower of ' + st.primaryUrl;
    $('f-keys').textContent = String(num(st.keys));
    $('f-entries').textContent = String(num(st.entries));
    $('f-waiters').textContent = String(num(st.waiters));
    $('f-streams').textContent = String(num(st.openStreams));
    tickUptime();
  }

  function tickUptime() {
    if (!S.status) return;
    const up = num(S.status.uptimeMs) + (S.statusFailed ? 0 : Date.now() - S.statusAt);
    const text = up < 60000 ? `${Math.floor(up / 1000)}s` : fmtDuration(up);
    const node = $('f-uptime');
    if (node.textContent !== text) node.textContent = text;
  }

  // ------------------------------------------------------------------ feed

  let feedDirty = [];

  function pushFeed(ev) {
    S.events.unshift(ev);
    if (S.events.length > FEED_LIMIT) S.events.length = FEED_LIMIT;
    feedDirty.push(ev);
  }

  function feedItem(ev) {
    const kind = KIND_LABELS[ev.kind] || String(ev.kind || 'unknown').replace(/^EVENT_KIND_/, '').toLowerCase();
    const at = num(ev.atUnixMs);
    const after = ev.holder
      ? ['holder ', el('span', { class: 'mono' }, `#${ev.holder.index}`), ` · ${num(ev.queueLength)} queued`]
      : ['free'];
    return el(
      'li',
      { class: `ev ev-${kind}`, dataset: { kind, key: ev.key } },
      el('time', { class: 'ev-at mono', datetime: new Date(at || Date.now()).toISOString() }, fmtClock(at || Date.now())),
      el('span', { class: `badge badge-${kind}` }, kind),
      el('button', { type: 'button', class: 'linkish ev-key', title: `Show ${ev.key}`, onclick: () => select(ev.key, { focusDetail: true }) }, ev.key),
      el('span', { class: 'ev-entry' },
        el('span', { class: 'mono' }, `#${ev.index}`), ' ', valueNode(ev.value),
        el('span', { class: 'ev-after muted' }, '→ ', ...after)),
    );
  }

  function renderFeed() {
    const list = $('events');
    if (feedDirty.length) {
      const frag = document.createDocumentFragment();
      // feedDirty is oldest first; the list is newest first.
      for (let i = feedDirty.length - 1; i >= 0; i--) frag.append(feedItem(feedDirty[i]));
      feedDirty = [];
      list.prepend(frag);
      while (list.childElementCount > FEED_LIMIT) list.lastElementChild.remove();
    }
    $('events-empty').hidden = list.childElementCount > 0;
    $('events-scope').textContent = S.prefix ? `under “${S.prefix}”` : 'all keys';
  }

  // ---------------------------------------------------------------- render

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderList();
      renderDetail();
      renderFeed();
      tick();
    });
  }

  const rowNodes = new Map(); // key -> <tr>

  function rowFor(key) {
    let tr = rowNodes.get(key);
    if (tr) return tr;
    const btn = el('button', { type: 'button', class: 'keybtn' }, key);
    btn.addEventListener('click', () => select(key));
    tr = el(
      'tr',
      { dataset: { key } },
      el('th', { scope: 'row', class: 'c-key' }, btn),
      el('td', { class: 'c-holder' }),
      el('td', { class: 'c-index num mono' }),
      el('td', { class: 'c-ttl' }, el('span', { class: 'ttl-text mono' }), el('span', { class: 'bar', 'aria-hidden': 'true' }, el('span'))),
      el('td', { class: 'c-queue num' }),
    );
    tr.addEventListener('click', (e) => {
      if (e.target.closest('button')) return;
      select(key);
    });
    tr._btn = btn;
    tr._ttl = tr.querySelector('.ttl-text');
    tr._bar = tr.querySelector('.bar > span');
    rowNodes.set(key, tr);
    return tr;
  }

  function fillRow(tr, row) {
    const h = row.holder;
    const sig = h ? `${h.index}|${h.value || ''}|${h.deadlineUnixMs || ''}|${row.queueLength}` : `free|${row.queueLength}`;
    const selected = row.key === S.selected;
    tr.classList.toggle('selected', selected);
    if (selected) tr._btn.setAttribute('aria-current', 'true');
    else tr._btn.removeAttribute('aria-current');
    if (row.flashAt && row.flashAt !== tr._flashed && Date.now() - row.flashAt < 1500) {
      tr._flashed = row.flashAt;
      tr.classList.remove('flash');
      void tr.offsetWidth; // restart the animation
      tr.classList.add('flash');
    }
    if (tr.dataset.sig === sig) return;
    tr.dataset.sig = sig;
    const [, holderTd, indexTd, , queueTd] = tr.children;
    holderTd.replaceChildren(h ? valueNode(h.value) : el('span', { class: 'muted' }, 'free'));
    indexTd.textContent = h ? h.index : '—';
    queueTd.textContent = String(row.queueLength);
    queueTd.classList.toggle('has-queue', row.queueLength > 0);
  }

  function renderList() {
    const body = $('keys-body');
    const state = $('keys-state');
    const keys = S.listState === 'error' ? [] : [...S.rows.keys()].sort(cmpKeys);
    // Keyed update: reuse each key's <tr>, move only what is out of place,
    // so focus stays on a row's button while rows around it change.
    const wanted = new Set(keys);
    for (const [key, tr] of rowNodes) {
      if (!wanted.has(key)) {
        tr.remove();
        rowNodes.delete(key);
      }
    }
    let cursor = body.firstElementChild;
    for (const key of keys) {
      const tr = rowFor(key);
      fillRow(tr, S.rows.get(key));
      if (tr === cursor) cursor = cursor.nextElementSibling;
      else body.insertBefore(tr, cursor);
    }
    document.body.classList.toggle('list-loading', S.listState === 'loading');
    state.className = 'state';
    if (S.listState === 'loading' && keys.length === 0) {
      state.replaceChildren(el('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Loading keys…');
    } else if (S.listState === 'error') {
      state.className = 'state state-error';
      state.replaceChildren(
        el('strong', null, 'Could not load the keys: '),
        S.listError,
        ' ',
        el('button', { type: 'button', class: 'btn btn-small', onclick: () => reloadPage() }, 'Retry'),
      );
    } else if (keys.length === 0) {
      state.replaceChildren(
        el('strong', null, S.prefix ? `No locks or elections under “${S.prefix}”.` : 'No locks or elections yet.'),
        el('br'),
        'Keys show up here as soon as someone takes a lock, e.g. ',
        el('code', null, `curl -X POST '${location.origin}/mod/v2/lock/${S.prefix || 'my-lock'}?ttl=60'`),
      );
    } else {
      state.replaceChildren();
    }
    $('keys').hidden = keys.length === 0;
    const pageNo = S.pages.length;
    $('prev').disabled = pageNo <= 1;
    $('next').disabled = !S.nextToken || S.listState !== 'ready';
    $('page-info').textContent =
      S.listState === 'ready' || keys.length
        ? `Page ${pageNo}${S.nextToken ? '' : pageNo > 1 ? ' (last)' : ''} · ${keys.length} ${keys.length === 1 ? 'key' : 'keys'}`
        : '';
  }

  function renderDetail() {
    const title = $('detail-title');
    const sub = $('detail-sub');
    const body = $('detail-body');
    const key = S.selected;
    const sig = JSON.stringify([key, S.prefix, S.detailState, S.detailError, S.detail]);
    if (body.dataset.sig === sig) return;
    body.dataset.sig = sig;
    if (key === null) {
      title.textContent = 'Select a key';
      sub.textContent = 'Choose a lock or election in the list to see its holder and queue.';
      body.replaceChildren();
      return;
    }
    title.textContent = key;
    const outside = key.startsWith(S.prefix) ? '' : ' · outside the prefix filter, not updated live';
    if (S.detailState === 'loading' && !S.detail) {
      sub.textContent = 'Lock or election';
      body.replaceChildren(el('p', { class: 'state' }, el('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Loading…'));
      return;
    }
    if (S.detailState === 'error') {
      sub.textContent = 'Lock or election';
      body.replaceChildren(
        el('p', { class: 'state state-error', role: 'alert' }, el('strong', null, 'Could not load this key: '), S.detailError, ' ',
          el('button', { type: 'button', class: 'btn btn-small', onclick: () => loadDetail() }, 'Retry')),
      );
      return;
    }
    const d = S.detail || { queue: [] };
    const queue = Array.isArray(d.queue) ? d.queue : [];
    const h = d.holder;
    const holders = Array.isArray(d.holders) ? d.holders : [];
    const limit = num(d.limit);
    const delayedUntil = num(d.delayedUntilUnixMs);
    const held = limit > 1 ? `Semaphore · ${holders.length} of ${limit} held` : 'Held';
    sub.textContent = (h ? `${held} · ${queue.length} waiting` : 'Free: nobody holds it') + outside;

    const parts = [];
    if (delayedUntil && delayedUntil > clock.now()) {
      // A hold with a lock-delay expired: nobody is granted the key before then.
      parts.push(el('p', { class: 'state', id: 'lock-delay' },
        el('strong', null, 'Lock-delay.'),
        ` A hold expired; nobody new is granted this key until ${fmtDateTime(delayedUntil)}.`));
    }
    if (h) {
      const ttl = num(h.ttlMs);
      parts.push(
        el('div', { class: 'holder-card', id: 'holder' },
          el('h3', null, 'Holder'),
          el('dl', { class: 'kv' },
            el('div', null, el('dt', null, 'Value'), el('dd', { class: 'holder-value' }, valueNode(h.value))),
            el('div', null, el('dt', null, 'Index'), el('dd', { class: 'holder-index mono' }, h.index)),
            el('div', { class: 'wide' }, el('dt', null, 'Time left'),
              el('dd', null,
                el('span', { class: 'ttl-text holder-ttl mono', dataset: { deadline: h.deadlineUnixMs || '0', ttl: String(ttl) } }, ttl ? '' : 'never expires'),
                ttl ? el('span', { class: 'bar bar-wide', 'aria-hidden': 'true' }, el('span')) : null,
                el('span', { class: 'muted small' }, ttl ? ` of ${fmtDuration(ttl)}` : ''))),
            el('div', null, el('dt', null, 'Acquired'), el('dd', { class: 'small' }, fmtDateTime(num(h.acquiredUnixMs)))),
            el('div', null, el('dt', null, 'Held for'), el('dd', { class: 'held-for mono', dataset: { since: h.acquiredUnixMs || '0' } }, '')),
          ),
          el('button', { type: 'button', class: 'btn btn-danger', id: 'release-holder', onclick: () => askRelease(key, h, true) }, 'Release holder…'),
        ),
      );
    } else {
      parts.push(el('p', { class: 'state' }, el('strong', null, 'Free.'), ' Nobody holds this lock and nobody is waiting for it.'));
    }
    if (holders.length > 1) {
      // A semaphore's other holders, oldest first, each with its own token.
      parts.push(
        el('div', { class: 'queue', id: 'other-holders' },
          el('h3', null, `Other holders (${holders.length - 1})`),
          el('div', { class: 'table-wrap' },
            el('table', { class: 'queue-table' },
              el('thead', null, el('tr', null,
                el('th', { scope: 'col' }, 'Value'),
                el('th', { scope: 'col', class: 'num' }, 'Index'),
                el('th', { scope: 'col', class: 'q-ttl' }, 'TTL'),
                el('th', { scope: 'col' }, el('span', { class: 'sr-only' }, 'Actions')))),
              el('tbody', null, ...holders.slice(1).map((o) =>
                el('tr', { dataset: { index: o.index } },
                  el('td', null, valueNode(o.value)),
                  el('td', { class: 'num mono' }, o.index),
                  el('td', { class: 'mono q-ttl' }, num(o.ttlMs) ? fmtDuration(num(o.ttlMs)) : '∞'),
                  el('td', null, el('button', { type: 'button', class: 'btn btn-small btn-danger-quiet', 'aria-label': `Release holder ${o.index}`, onclick: () => askRelease(key, o, true) }, 'Release…')))))))),
      );
    }

    const qHead = el('h3', { id: 'queue-title' }, `Queue (${queue.length})`);
    if (queue.length === 0) {
      parts.push(el('div', { class: 'queue' }, qHead, el('p', { class: 'muted' }, 'Nobody is waiting.')));
    } else {
      const rows = queue.map((q, i) =>
        el('tr', { dataset: { index: q.index } },
          el('td', { class: 'num' }, String(i + 1)),
          el('td', { class: 'q-value' }, valueNode(q.value)),
          el('td', { class: 'num mono q-index' }, q.index),
          el('td', { class: 'mono waited', dataset: { since: q.queuedUnixMs || '0' } }, ''),
          el('td', { class: 'mono q-ttl' }, num(q.ttlMs) ? fmtDuration(num(q.ttlMs)) : '∞'),
          el('td', { class: 'num q-waiters' }, String(num(q.waiters))),
          el('td', null, el('button', { type: 'button', class: 'btn btn-small btn-danger-quiet', 'aria-label': `Remove queued entry ${q.index}`, onclick: () => askRelease(key, q, false) }, 'Remove…')),
        ),
      );
      parts.push(
        el('div', { class: 'queue' }, qHead,
          el('div', { class: 'table-wrap' },
            el('table', { class: 'queue-table', 'aria-labelledby': 'queue-title' },
              el('thead', null, el('tr', null,
                el('th', { scope: 'col', class: 'num' }, '#'),
                el('th', { scope: 'col' }, 'Value'),
                el('th', { scope: 'col', class: 'num' }, 'Index'),
                el('th', { scope: 'col' }, 'Waiting'),
                el('th', { scope: 'col', class: 'q-ttl' }, 'TTL'),
                el('th', { scope: 'col', class: 'num q-waiters' }, 'Waiters'),
                el('th', { scope: 'col' }, el('span', { class: 'sr-only' }, 'Actions')))),
              el('tbody', null, ...rows)))),
      );
    }
    // Keep keyboard focus on the same control across a re-render.
    const focusedId = document.activeElement && body.contains(document.activeElement) ? document.activeElement.id || document.activeElement.getAttribute('aria-label') : null;
    body.replaceChildren(...parts);
    if (focusedId) {
      const again = body.querySelector(`[id="${CSS.escape(focusedId)}"], [aria-label="${CSS.escape(focusedId)}"]`);
      if (again) again.focus();
    }
  }

  /** Updates the live clocks: TTLs, bars, queue wait times, uptime. */
  function tick() {
    for (const [key, tr] of rowNodes) {
      const row = S.rows.get(key);
      if (!row) continue;
      setTtl(tr._ttl, tr._bar, row.holder);
    }
    const ht = document.querySelector('#detail-body .holder-ttl');
    if (ht && S.detail && S.detail.holder) setTtl(ht, document.querySelector('#detail-body .bar > span'), S.detail.holder);
    const now = clock.now();
    for (const node of document.querySelectorAll('#detail-body [data-since]')) {
      const since = num(node.dataset.since);
      const text = since ? fmtDuration(Math.max(0, now - since)) : '—';
      if (node.textContent !== text) node.textContent = text;
    }
    tickUptime();
  }

  function setTtl(textNode, barNode, holder) {
    let text = '—';
    let frac = 0;
    let cls = '';
    if (holder) {
      const rem = remainingOf(holder);
      if (rem === null) {
        text = 'never';
        cls = 'ttl-none';
      } else {
        const ttl = num(holder.ttlMs);
        text = rem > 0 ? fmtDuration(rem) : 'expiring…';
        frac = ttl ? Math.min(1, rem / ttl) : 0;
        cls = frac < 0.15 ? 'ttl-low' : '';
        textNode.dataset.remainingMs = String(Math.round(rem));
      }
    }
    if (textNode.textContent !== text) textNode.textContent = text;
    if (textNode.dataset.cls !== cls) {
      textNode.classList.remove('ttl-low', 'ttl-none');
      if (cls) textNode.classList.add(cls);
      textNode.dataset.cls = cls;
    }
    if (barNode) {
      const w = `${(frac * 100).toFixed(1)}%`;
      if (barNode.style.width !== w) barNode.style.width = w;
      barNode.parentElement.hidden = !holder || remainingOf(holder) === null;
    }
  }

  // ------------------------------------------------------------ navigation

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    return { prefix: p.get('prefix') || '', key: p.has('key') ? p.get('key') : null };
  }

  function writeHash() {
    const p = new URLSearchParams();
    if (S.prefix) p.set('prefix', S.prefix);
    if (S.selected !== null) p.set('key', S.selected);
    const hash = p.toString();
    history.replaceState(null, '', hash ? `#${hash}` : location.pathname + location.search);
  }

  function setPrefix(prefix) {
    if (prefix === S.prefix) return;
    S.prefix = prefix;
    S.pages = [{ token: PAGE_TOKEN_FIRST, after: null }];
    S.nextToken = '';
    S.upper = null;
    S.rows = new Map();
    S.listState = 'loading';
    S.events = [];
    feedDirty = [];
    $('events').replaceChildren();
    writeHash();
    scheduleRender();
    connect(); // a new watch for the new prefix; its open triggers resync()
  }

  /** Applies a prefix still being typed; true if it changed the prefix. */
  function flushPrefix() {
    clearTimeout(S.typingTimer);
    const typed = $('prefix').value;
    if (typed === S.prefix) return false;
    setPrefix(typed);
    return true;
  }

  function nextPage() {
    if (flushPrefix() || !S.nextToken) return;
    const keys = [...S.rows.keys()].sort(cmpKeys);
    S.pages.push({ token: S.nextToken, after: S.upper !== null ? S.upper : keys[keys.length - 1] || null });
    reloadPage().then(() => $('keys-panel').focus());
  }

  function prevPage() {
    if (flushPrefix() || S.pages.length <= 1) return;
    S.pages.pop();
    reloadPage().then(() => $('keys-panel').focus());
  }

  /** Up/Down (and Home/End) move between the key buttons of the list. */
  function onListKey(e) {
    const btn = e.target.closest('.keybtn');
    if (!btn) return;
    const buttons = [...$('keys-body').querySelectorAll('.keybtn')];
    const i = buttons.indexOf(btn);
    let j = -1;
    if (e.key === 'ArrowDown') j = Math.min(buttons.length - 1, i + 1);
    else if (e.key === 'ArrowUp') j = Math.max(0, i - 1);
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = buttons.length - 1;
    if (j < 0) return;
    e.preventDefault();
    buttons[j].focus();
  }

  // ------------------------------------------------------------------ start

  function start() {
    const initial = readHash();
    S.prefix = initial.prefix;
    S.selected = initial.key;
    if (S.selected !== null) S.detailState = 'loading';
    $('prefix').value = S.prefix;

    $('prefix').addEventListener('input', (e) => {
      clearTimeout(S.typingTimer);
      S.typingTimer = setTimeout(() => setPrefix(e.target.value), 250);
    });
    $('search').addEventListener('submit', (e) => {
      e.preventDefault();
      flushPrefix();
    });
    $('page-size').addEventListener('change', (e) => {
      S.pageSize = Number(e.target.value) || 100;
      if (flushPrefix()) return; // the new prefix loads its first page
      S.pages = [{ token: PAGE_TOKEN_FIRST, after: null }];
      S.upper = null;
      reloadPage();
    });
    $('prev').addEventListener('click', prevPage);
    $('next').addEventListener('click', nextPage);
    $('keys-body').addEventListener('keydown', onListKey);
    $('events-clear').addEventListener('click', () => {
      S.events = [];
      feedDirty = [];
      $('events').replaceChildren();
      scheduleRender();
    });
    $('banner-retry').addEventListener('click', () => {
      S.retryDelay = 1000;
      connect();
    });
    $('confirm').addEventListener('close', onConfirmClose);
    $('token-dialog').addEventListener('close', onTokenClose);
    window.addEventListener('hashchange', () => {
      const h = readHash();
      if (h.prefix !== S.prefix) {
        $('prefix').value = h.prefix;
        setPrefix(h.prefix);
      }
      if (h.key !== null && h.key !== S.selected) select(h.key);
    });

    setInterval(() => {
      if (!document.hidden) tick();
    }, TICK_MS);
    setInterval(() => {
      if (!document.hidden) refreshStatus();
    }, STATUS_SLOW_INTERVAL_MS);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) refreshStatus();
    });

    scheduleRender();
    connect();
  }

  start();
})();
