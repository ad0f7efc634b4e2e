'use strict';
// baton-client against a real baton process (see baton-server.js). Timing
// margins are generous: these run on a 2-core machine next to a build.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { setTimeout: sleep } = require('node:timers/promises');

const { Client, BatonError, LockTimeout, LockAborted, NotFound, grpc } = require('..');
const { startBaton } = require('./baton-server');

const WAIT = 20000; // ms: upper bound for anything that should happen "soon"

let server;
let client;

before(async () => {
  server = await startBaton();
  client = new Client(server.target);
});

after(async () => {
  if (client) client.close();
  if (server) await server.stop();
});

function uniqueKey(name) {
  return `node/${name}/${crypto.randomBytes(4).toString('hex')}`;
}

async function waitUntil(pred, timeoutMs = WAIT, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return true;
    await sleep(stepMs);
  }
  return pred();
}

/** Resolves to 'pending' if p has not settled within ms. */
function settledWithin(p, ms) {
  return Promise.race([p.then(() => 'settled', () => 'settled'), sleep(ms).then(() => 'pending')]);
}

async function holder(key) {
  return (await client.get(key)).holder;
}

test('acquire and release', async () => {
  const key = uniqueKey('acquire');
  assert.equal(await holder(key), null);
  const lock = await client.lock(key, { ttl: 10, value: 'alice' });
  try {
    assert.equal(typeof lock.index, 'bigint');
    assert.ok(lock.index > 0n);
    assert.ok(lock.held && !lock.lost);
    const h = await holder(key);
    assert.equal(BigInt(h.index), lock.index);
    assert.equal(h.value, 'alice');
    assert.equal(h.ttlMs, '10000');
    assert.ok(Number(h.remainingMs) > 0 && Number(h.remainingMs) <= 10000);
  } finally {
    await lock.release();
  }
  assert.ok(!lock.held && !lock.lost);
  assert.equal(await holder(key), null);
  await lock.release(); // a second release is a no-op
});

test('withLock releases after the callback, even when it throws', async () => {
  const key = uniqueKey('withlock');
  const idx = await client.withLock(key, { ttl: 10 }, async (lock) => {
    assert.equal(BigInt((await holder(key)).index), lock.index);
    return lock.index;
  });
  assert.ok(idx > 0n);
  assert.equal(await holder(key), null);
  await assert.rejects(
    client.withLock(key, { ttl: 10 }, async () => {
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(await holder(key), null);
});

test('fencing index increases', async () => {
  const key = uniqueKey('fencing');
  const indexes = [];
  for (let i = 0; i < 3; i++) {
    for (const k of [key, `${key}/other`]) {
      const lock = await client.lock(k, { ttl: 10 });
      indexes.push(lock.index);
      await lock.release();
    }
  }
  for (let i = 1; i < indexes.length; i++) {
    assert.ok(indexes[i] > indexes[i - 1], `indexes not strictly increasing: ${indexes}`);
  }
});

test('a second locker blocks until the first releases', async () => {
  const key = uniqueKey('blocks');
  const other = new Client(server.target);
  const order = [];
  try {
    const first = await client.lock(key, { ttl: 30, value: 'first' });
    const secondP = other.lock(key, { ttl: 30, value: 'second' }).then((l) => {
      order.push('second acquired');
      return l;
    });
    assert.ok(await waitUntil(async () => (await client.get(key)).queue.length === 1), 'second never queued');
    const queued = (await client.get(key)).queue[0];
    assert.equal(queued.value, 'second');
    assert.ok(BigInt(queued.index) > first.index);
    assert.equal(await settledWithin(secondP, 1500), 'pending', 'second acquired while the first held the lock');
    assert.equal(BigInt((await holder(key)).index), first.index);
    order.push('first releases');
    await first.release();
    const second = await Promise.race([
      secondP,
      sleep(WAIT).then(() => {
        throw new Error('second did not acquire after the first released');
      }),
    ]);
    assert.equal(second.index, BigInt(queued.index));
    assert.equal((await holder(key)).value, 'second');
    await second.release();
    assert.deepEqual(order, ['first releases', 'second acquired']);
    assert.equal(await holder(key), null);
  } finally {
    other.close();
  }
});

test('timeout rejects with LockTimeout and leaves nothing queued', async () => {
  const key = uniqueKey('timeout');
  const lock = await client.lock(key, { ttl: 30 });
  try {
    const start = Date.now();
    const err = await client.lock(key, { ttl: 5, timeout: 0.5 }).then(
      () => assert.fail('acquired a held lock'),
      (e) => e,
    );
    const took = Date.now() - start;
    assert.ok(err instanceof LockTimeout, err);
    assert.ok(err instanceof BatonError);
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(err.message.includes(key));
    assert.ok(took >= 400 && took < 10000, `took ${took} ms`);

    const err0 = await client.lock(key, { ttl: 5, timeout: 0 }).then(
      () => assert.fail('acquired a held lock'),
      (e) => e,
    );
    assert.ok(err0 instanceof LockTimeout, err0);
    assert.equal(err0.codeName, 'FAILED_PRECONDITION');

    const resp = await client.get(key);
    assert.equal(BigInt(resp.holder.index), lock.index);
    assert.equal(resp.queue.length, 0);
  } finally {
    await lock.release();
  }
});

test('timeout 0 on a free lock acquires', async () => {
  const key = uniqueKey('timeout0');
  const lock = await client.lock(key, { ttl: 5, timeout: 0 });
  assert.equal(BigInt((await holder(key)).index), lock.index);
  await lock.release();
});

test('renewal keeps a short-ttl lock alive beyond its ttl', async () => {
  const key = uniqueKey('renew');
  const lock = await client.lock(key, { ttl: 1 });
  try {
    await sleep(4000); // four ttls
    const h = await holder(key);
    assert.ok(h, 'lock expired despite renewal');
    assert.equal(BigInt(h.index), lock.index);
    assert.ok(lock.held && !lock.lost);
  } finally {
    await lock.release();
  }
  assert.equal(await holder(key), null);
});

test('without renewal a short-ttl lock expires and is reported lost', async () => {
  // The control for the test above.
  const key = uniqueKey('norenew');
  const reasons = [];
  const lock = await client.lock(key, { ttl: 1, renew: false });
  lock.onLost((why) => reasons.push(why));
  assert.ok(await waitUntil(() => lock.lost), 'expiry was not noticed');
  assert.equal(await holder(key), null);
  assert.ok(!lock.held);
  assert.deepEqual(reasons, ['END_REASON_EXPIRED']);
  await lock.release(); // not an error
  assert.ok(lock.lost);
});

test('release by someone else is reported lost', async () => {
  const key = uniqueKey('stolen');
  const lock = await client.lock(key, { ttl: 30 });
  await new Promise((resolve, reject) =>
    client.lockStub.Release({ key, index: String(lock.index) }, (err) => (err ? reject(err) : resolve())),
  );
  assert.ok(await waitUntil(() => lock.lost), 'release by someone else was not noticed');
  await lock.release();
});

test('a queued request released by someone else rejects with LockAborted', async () => {
  const key = uniqueKey('aborted');
  const lock = await client.lock(key, { ttl: 30 });
  try {
    const secondP = client.lock(key, { ttl: 30 });
    secondP.catch(() => {}); // handled below
    assert.ok(await waitUntil(async () => (await client.get(key)).queue.length === 1));
    const queued = (await client.get(key)).queue[0].index;
    await new Promise((resolve, reject) =>
      client.lockStub.Release({ key, index: queued }, (err) => (err ? reject(err) : resolve())),
    );
    await assert.rejects(secondP, (e) => e instanceof LockAborted);
  } finally {
    await lock.release();
  }
});

test('requests with the same value share one entry and index', async () => {
  const key = uniqueKey('joined');
  const lock = await client.lock(key, { ttl: 30 });
  const a = client.lock(key, { ttl: 30, value: 'shared' });
  const b = client.lock(key, { ttl: 30, value: 'shared' });
  try {
    assert.ok(
      await waitUntil(async () => {
        const q = (await client.get(key)).queue;
        return q.length === 1 && q[0].waiters === '2';
      }),
      'the two requests did not join one entry',
    );
  } finally {
    await lock.release();
  }
  const [la, lb] = await Promise.all([a, b]);
  assert.equal(la.index, lb.index);
  await la.release();
  await lb.release(); // already released through la: not an error
});

test('invalid arguments', async () => {
  await assert.rejects(client.lock('', { ttl: 1 }), (e) => e instanceof BatonError && e.codeName === 'INVALID_ARGUMENT');
  assert.throws(() => client.lock('x', { ttl: -1 }), RangeError);
  assert.throws(() => client.campaign('x', ''), RangeError);
});

test('renew of an unknown entry is NotFound', async () => {
  const key = uniqueKey('notfound');
  const lock = await client.lock(key, { ttl: 5 });
  await lock.release();
  await assert.rejects(lock.renew(), NotFound);
});

test('election: leader, blocking second candidate, resign', async () => {
  const election = uniqueKey('election');
  const other = new Client(server.target);
  try {
    assert.equal(await client.leader(election), null);
    const a = await client.campaign(election, 'a', { ttl: 30 });
    const leader = await client.leader(election);
    assert.deepEqual([leader.name, leader.index, leader.ttlMs], ['a', a.index, 30000]);
    assert.equal((await holder(election)).value, 'a'); // elections are locks
    const bP = other.campaign(election, 'b', { ttl: 30 });
    assert.ok(await waitUntil(async () => (await client.get(election)).queue.length === 1));
    assert.equal(await settledWithin(bP, 1000), 'pending', 'b elected while a leads');
    await a.resign();
    const b = await bP;
    assert.ok(b.index > a.index);
    const l2 = await client.leader(election);
    assert.equal(l2.name, 'b');
    assert.equal(l2.index, b.index);
    await b.resign();
    assert.equal(await client.leader(election), null);
  } finally {
    other.close();
  }
});

test('campaign timeout and renewal', async () => {
  const election = uniqueKey('campaign');
  await client.withLeadership(election, 'a', { ttl: 1 }, async (a) => {
    await assert.rejects(client.campaign(election, 'b', { ttl: 1, timeout: 0 }), LockTimeout);
    await sleep(3500); // beyond the ttl: the renewer keeps a leading
    assert.equal((await client.leader(election)).index, a.index);
  });
  assert.equal(await client.leader(election), null);
});

test('observe: nobody, a, nobody', async () => {
  const election = uniqueKey('observe');
  const seen = [];
  const obs = client.observe(election);
  const done = (async () => {
    for await (const leader of obs) seen.push(leader);
  })();
  try {
    assert.ok(await waitUntil(() => seen.length >= 1), 'Observe sent nothing');
    assert.equal(seen[0], null);
    await sleep(300);
    const a = await client.campaign(election, 'a', { ttl: 30 });
    assert.ok(await waitUntil(() => seen.length >= 2));
    await a.resign();
    assert.ok(await waitUntil(() => seen.length >= 3));
    assert.deepEqual(
      seen.map((l) => (l ? l.name : null)),
      [null, 'a', null],
    );
    assert.equal(seen[1].index, a.index);
  } finally {
    obs.close();
  }
  await done; // close() ends the iteration quietly
});
