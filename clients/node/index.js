'use strict';
// A thin Node.js client for baton's gRPC API.
//
// `client.lock()` and `client.campaign()` acquire by reading the Wait/Campaign
// stream until `acquired`/`elected`, then keep the hold alive with a renew by
// index every ttl/3, keep reading the stream so that `lost` turns true as soon
// as the hold ends under them, and give it up with `release()` (by index) or
// `resign()` (by name). `withLock()`/`withLeadership()` wrap that around a
// callback. `leader()` and `observe()` read an election.
//
// Times are seconds in this API (numbers, fractions allowed) and milliseconds
// on the wire. Fencing tokens (`index`) are BigInt: they are uint64.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_TARGET = '127.0.0.1:4001';
const DEFAULT_PROTO_DIR = path.join(__dirname, '..', '..', 'proto');

const LOADER_OPTIONS = {
  keepCase: false,
  longs: String, // uint64 arrive as decimal strings; converted below
  enums: String,
  defaults: true,
  oneofs: true,
};

const packages = new Map();
function loadPackage(protoDir) {
  if (!packages.has(protoDir)) {
    const def = protoLoader.loadSync(['baton/v1/lock.proto', 'baton/v1/election.proto'], {
      ...LOADER_OPTIONS,
      includeDirs: [protoDir],
    });
    packages.set(protoDir, grpc.loadPackageDefinition(def).baton.v1);
  }
  return packages.get(protoDir);
}

// --- errors -----------------------------------------------------------------

/** A baton call failed. `code` is the gRPC status code, `codeName` its name. */
class BatonError extends Error {
  constructor(message, code = null, details = '') {
    super(message);
    this.name = 'BatonError';
    this.code = code;
    this.codeName = code === null ? null : statusName(code);
    this.details = details;
  }
}
/** Not acquired within `timeout` (or not free with timeout 0); nothing is left queued. */
class LockTimeout extends BatonError {
  constructor(...args) {
    super(...args);
    this.name = 'LockTimeout';
  }
}
/** The queued request was released by someone else before it acquired. */
class LockAborted extends BatonError {
  constructor(...args) {
    super(...args);
    this.name = 'LockAborted';
  }
}
/** The key is in use with another limit (semaphore or lock); `details` names it. */
class LimitMismatch extends BatonError {
  constructor(...args) {
    super(...args);
    this.name = 'LimitMismatch';
  }
}
/** No entry matches the index, value or name given. */
class NotFound extends BatonError {
  constructor(...args) {
    super(...args);
    this.name = 'NotFound';
  }
}
/** The server requires a token (baton --auth-file) and got none, or an unknown one. */
class Unauthenticated extends BatonError {
  constructor(...args) {
    super(...args);
    this.name = 'Unauthenticated';
  }
}
/** The token may not do this on this key (outside its prefixes, or without the right). */
class PermissionDenied extends BatonError {
  constructor(...args) {
    super(...args);
    this.name = 'PermissionDenied';
  }
}

function statusName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

function wrap(err, what) {
  const code = typeof err.code === 'number' ? err.code : null;
  const details = err.details || err.message;
  const message = `${what}: ${code === null ? 'error' : statusName(code)}: ${details}`;
  if (code === grpc.status.FAILED_PRECONDITION && String(details).startsWith('limit mismatch')) {
    return new LimitMismatch(message, code, details);
  }
  switch (code) {
    case grpc.status.DEADLINE_EXCEEDED:
    case grpc.status.FAILED_PRECONDITION:
      return new LockTimeout(message, code, details);
    case grpc.status.ABORTED:
      return new LockAborted(message, code, details);
    case grpc.status.NOT_FOUND:
      return new NotFound(message, code, details);
    case grpc.status.UNAUTHENTICATED:
      return new Unauthenticated(message, code, details);
    case grpc.status.PERMISSION_DENIED:
      return new PermissionDenied(message, code, details);
    default:
      return new BatonError(message, code, details);
  }
}

function toMs(seconds, what) {
  if (typeof seconds !== 'number' || !(seconds >= 0) || !Number.isFinite(seconds)) {
    throw new RangeError(`${what} must be a finite number of seconds >= 0, got ${seconds}`);
  }
  return seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : 0;
}

function leaderFrom(resp) {
  if (!resp.leader) return null;
  const l = resp.leader;
  return {
    name: l.name,
    index: BigInt(l.index),
    ttlMs: Number(l.ttlMs),
    electedUnixMs: Number(l.electedUnixMs),
    deadlineUnixMs: Number(l.deadlineUnixMs),
  };
}

/** A holder from a Get or Check answer, with numbers as numbers and the index a BigInt. */
function holderFrom(h) {
  return {
    index: BigInt(h.index),
    value: h.value,
    ttlMs: Number(h.ttlMs),
    acquiredUnixMs: Number(h.acquiredUnixMs),
    deadlineUnixMs: Number(h.deadlineUnixMs),
    lockDelayMs: Number(h.lockDelayMs),
  };
}

// --- holds ------------------------------------------------------------------

/** What Lock and Campaign share. */
class Hold {
  constructor(client, key, opts, eventField) {
    const { ttl = 30, timeout = null, renew = true } = opts;
    this._client = client;
    this.key = key;
    this.ttl = ttl;
    this._ttlMs = toMs(ttl, 'ttl');
    this._timeoutMs = timeout === null || timeout === undefined ? null : toMs(timeout, 'timeout');
    this._autoRenew = renew;
    this._eventField = eventField;
    /** The fencing token (BigInt) once acquired. */
    this.index = null;
    this.deadlineUnixMs = 0;
    this._call = null;
    this._held = false;
    this._lost = false;
    this._stopping = false;
    this._timer = null;
    this._renewing = null;
    this._onLost = [];
  }

  /** True while acquired and not lost. */
  get held() {
    return this._held && !this._lost;
  }

  /** True once the hold ended while held (expired, or released by someone else); stays true. */
  get lost() {
    return this._lost;
  }

  /** Calls fn(reason) when the hold is lost. */
  onLost(fn) {
    this._onLost.push(fn);
    return this;
  }

  /** Waits until acquired; rejects with LockTimeout, LockAborted or BatonError. */
  acquire() {
    if (this._held || this._call) return Promise.reject(new Error('already acquired'));
    return new Promise((resolve, reject) => {
      const call = this._open();
      this._call = call;
      let acquired = false;
      let ended = false;
      const endHold = (why) => {
        if (ended) return;
        ended = true;
        this._stopTimer();
        if (acquired && !this._stopping) {
          this._lost = true;
          for (const fn of this._onLost) {
            try {
              fn(why);
            } catch (e) {
              process.emitWarning(`baton: onLost callback threw: ${e}`);
            }
          }
        }
      };
      call.on('data', (ev) => {
        if (ev.event === 'queued') {
          this.index = BigInt(ev.queued.index);
        } else if (ev.event === this._eventField && !acquired) {
          const got = ev[this._eventField];
          acquired = true;
          this._held = true;
          this.index = BigInt(got.index);
          this.deadlineUnixMs = Number(got.deadlineUnixMs);
          if (this._autoRenew && this._ttlMs > 0) this._scheduleRenew();
          resolve(this);
        } else if (ev.event === 'ended') {
          endHold(ev.ended.reason);
        }
      });
      call.on('error', (err) => {
        if (!acquired) {
          this._call = null;
          reject(wrap(err, `acquire ${JSON.stringify(this.key)}`));
        } else {
          endHold(`stream failed: ${statusName(err.code)}`);
        }
      });
      call.on('end', () => {
        if (!acquired) {
          this._call = null;
          reject(new BatonError(`acquire ${JSON.stringify(this.key)}: stream closed before acquisition`));
        } else {
          endHold('stream closed');
        }
      });
    });
  }

  _scheduleRenew() {
    this._timer = setTimeout(() => {
      this._timer = null;
      this._renewing = this.renew()
        .then(() => {
          if (this.held && !this._stopping) this._scheduleRenew();
        })
        .catch((err) => {
          if (this._stopping) return;
          if (err instanceof NotFound) {
            // gone: the stream's `ended` normally says so first
            if (!this._lost) {
              this._lost = true;
              for (const fn of this._onLost) fn('renew found no entry');
            }
            return;
          }
          process.emitWarning(`baton: renewing ${this.key} failed: ${err.message}`);
          if (this.held) this._scheduleRenew(); // maybe transient: try again next round
        })
        .finally(() => {
          this._renewing = null;
        });
    }, this._ttlMs / 3);
  }

  _stopTimer() {
    if (this._timer) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  /** Resets the deadline to now + ttl seconds (default: the ttl it was acquired with). */
  async renew(ttl) {
    const ttlMs = ttl === undefined ? this._ttlMs : toMs(ttl, 'ttl');
    const resp = await this._client._unary(
      this._client._lock,
      'Renew',
      { key: this.key, index: String(this.index), ttlMs },
      `renew ${JSON.stringify(this.key)} index ${this.index}`,
    );
    this.deadlineUnixMs = Number(resp.deadlineUnixMs);
    return resp;
  }

  /** Gives the hold up. A no-op if not held; a hold lost meanwhile is not an error (see `lost`). */
  async _giveUpHold() {
    if (!this._held) return;
    this._stopping = true;
    this._stopTimer();
    if (this._renewing) await this._renewing.catch(() => {});
    try {
      if (!this._lost) await this._giveUp();
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
    } finally {
      this._held = false;
      if (this._call) this._call.cancel();
      this._call = null;
    }
  }
}

/** A lock on a key. Get one with `client.lock()`. */
class Lock extends Hold {
  constructor(client, key, opts = {}) {
    super(client, key, opts, 'acquired');
    this.value = opts.value || '';
    this.limit = opts.limit || 1;
    this._lockDelayMs = toMs(opts.lockDelay || 0, 'lockDelay');
  }

  _open() {
    const req = {
      key: this.key,
      value: this.value,
      ttlMs: this._ttlMs,
      limit: this.limit,
      lockDelayMs: this._lockDelayMs,
    };
    if (this._timeoutMs !== null) req.timeoutMs = this._timeoutMs;
    return this._client._lock.Wait(req);
  }

  _giveUp() {
    return this._client._unary(
      this._client._lock,
      'Release',
      { key: this.key, index: String(this.index) },
      `release ${JSON.stringify(this.key)} index ${this.index}`,
    );
  }

  /** Releases the lock by index. */
  release() {
    return this._giveUpHold();
  }
}

/** A candidacy in an election. Get one with `client.campaign()`. */
class Campaign extends Hold {
  constructor(client, election, name, opts = {}) {
    if (!name) throw new RangeError('a candidate needs a non-empty name');
    super(client, election, opts, 'elected');
    this.election = election;
    this.name = name;
    this._lockDelayMs = toMs(opts.lockDelay || 0, 'lockDelay');
  }

  _open() {
    const req = { election: this.election, name: this.name, ttlMs: this._ttlMs, lockDelayMs: this._lockDelayMs };
    if (this._timeoutMs !== null) req.timeoutMs = this._timeoutMs;
    return this._client._election.Campaign(req);
  }

  _giveUp() {
    return this._client._unary(
      this._client._election,
      'Resign',
      { election: this.election, name: this.name },
      `resign ${JSON.stringify(this.name)} from ${JSON.stringify(this.election)}`,
    );
  }

  /** Resigns by name: the next candidate leads at once. */
  resign() {
    return this._giveUpHold();
  }
}

if (Symbol.asyncDispose) {
  Lock.prototype[Symbol.asyncDispose] = Lock.prototype.release;
  Campaign.prototype[Symbol.asyncDispose] = Campaign.prototype.resign;
}

// --- observe ----------------------------------------------------------------

/** An open Observe stream: `for await` it for leaders (or null); close() ends it. */
class Observation {
  constructor(call, election) {
    this._call = call;
    this.election = election;
    this._buffer = [];
    this._waiters = [];
    this._done = false;
    this._error = null;
    this._closed = false;
    call.on('data', (resp) => this._push({ value: leaderFrom(resp), done: false }));
    call.on('error', (err) => {
      if (this._closed && err.code === grpc.status.CANCELLED) this._finish(null);
      else this._finish(wrap(err, `observe ${JSON.stringify(election)}`));
    });
    call.on('end', () => this._finish(null));
  }

  _push(item) {
    const w = this._waiters.shift();
    if (w) w.resolve(item);
    else this._buffer.push(item);
  }

  _finish(err) {
    if (this._done) return;
    this._done = true;
    this._error = err;
    for (const w of this._waiters.splice(0)) {
      if (err) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  next() {
    if (this._buffer.length) return Promise.resolve(this._buffer.shift());
    if (this._done) {
      return this._error ? Promise.reject(this._error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  return() {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._call.cancel();
  }
}

// --- client -----------------------------------------------------------------

/**
 * A connection to a baton server.
 *
 * new Client(target = '127.0.0.1:4001', { credentials, rpcTimeout = 10, protoDir })
 *
 * Plaintext unless `credentials` are given; for a baton started with
 * --tls-cert-file pass grpc.credentials.createSsl(fs.readFileSync('ca.pem')).
 * An `https://host:port` target means TLS with the system's roots when no
 * credentials are given.
 */
/**
 * An interceptor that sends `authorization: Bearer TOKEN` with every call.
 * (grpc-js's call credentials refuse plaintext channels; a token over
 * plaintext is the operator's choice, as with curl.)
 */
function bearer(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

class Client {
  /**
   * opts: credentials (grpc channel credentials, for TLS with a private CA),
   * rpcTimeout (seconds), protoDir, token (sent as `authorization: Bearer`
   * with every call, for a baton started with --auth-file).
   */
  constructor(target = DEFAULT_TARGET, opts = {}) {
    const tls = target.startsWith('https://');
    const {
      credentials = tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure(),
      rpcTimeout = 10,
      protoDir = DEFAULT_PROTO_DIR,
      token = null,
    } = opts;
    this.target = target.replace(/^https?:\/\//, '');
    this.rpcTimeout = rpcTimeout;
    const pkg = loadPackage(protoDir);
    const interceptors = token ? [bearer(token)] : [];
    this._lock = new pkg.Lock(this.target, credentials, { interceptors });
    // share the channel between both services
    this._election = new pkg.Election(this.target, credentials, {
      channelOverride: this._lock.getChannel(),
      interceptors,
    });
  }

  /** The raw grpc-js stubs, for anything the wrapper lacks. */
  get lockStub() {
    return this._lock;
  }
  get electionStub() {
    return this._election;
  }

  close() {
    this._lock.close();
  }

  _unary(stub, method, req, what) {
    return new Promise((resolve, reject) => {
      stub[method](req, { deadline: Date.now() + this.rpcTimeout * 1000 }, (err, resp) => {
        if (err) reject(wrap(err, what));
        else resolve(resp);
      });
    });
  }

  /**
   * Acquires a lock on `key` and resolves to a held Lock.
   * opts: ttl (seconds, default 30, 0 = never expires), value (requests with
   * the same non-empty value share an entry), timeout (null = forever, 0 =
   * only if free now, N seconds), renew (default true: renew every ttl/3),
   * limit (up to this many holders at once: a semaphore; the key's first
   * entry fixes it, another rejects with LimitMismatch), lockDelay (seconds
   * nobody else is granted the key after this hold expires; a release ends
   * it without delay).
   */
  lock(key, opts = {}) {
    return new Lock(this, key, opts).acquire();
  }

  /** Runs `fn(lock)` while holding the lock on `key`; releases afterwards, whatever happens. */
  async withLock(key, opts, fn) {
    const lock = await this.lock(key, opts);
    try {
      return await fn(lock);
    } finally {
      await lock.release();
    }
  }

  /** The raw GetResponse for `key` (holder, holders, queue, limit, delayedUntilUnixMs). */
  get(key) {
    return this._unary(this._lock, 'Get', { key }, `get ${JSON.stringify(key)}`);
  }

  /**
   * Whether `index` (a fencing token) holds `key` now, so a resource can
   * refuse a stale holder's write: resolves to {current, holders}.
   */
  async check(key, index) {
    const resp = await this._unary(
      this._lock,
      'Check',
      { key, index: String(index) },
      `check ${JSON.stringify(key)} index ${index}`,
    );
    return { current: Boolean(resp.current), holders: (resp.holders || []).map(holderFrom) };
  }

  /** Campaigns as `name` in `election`; resolves to a Campaign once elected. Same opts as lock(). */
  campaign(election, name, opts = {}) {
    return new Campaign(this, election, name, opts).acquire();
  }

  /** Runs `fn(campaign)` while leading `election` as `name`; resigns afterwards. */
  async withLeadership(election, name, opts, fn) {
    const c = await this.campaign(election, name, opts);
    try {
      return await fn(c);
    } finally {
      await c.resign();
    }
  }

  /** The current leader ({name, index, ttlMs, electedUnixMs, deadlineUnixMs}) or null. */
  async leader(election) {
    const resp = await this._unary(this._election, 'Leader', { election }, `leader of ${JSON.stringify(election)}`);
    return leaderFrom(resp);
  }

  /** The current leader (or null), then every change of leader, as an async iterable. */
  observe(election) {
    return new Observation(this._election.Observe({ election }), election);
  }
}

module.exports = {
  Client,
  Lock,
  Campaign,
  Observation,
  BatonError,
  LockTimeout,
  LockAborted,
  LimitMismatch,
  NotFound,
  Unauthenticated,
  PermissionDenied,
  DEFAULT_TARGET,
  grpc,
};
