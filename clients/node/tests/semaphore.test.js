'use strict';
// Semaphores, lock-delay and fencing-token checks against a real baton.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { Client, LockTimeout, LimitMismatch } = require('..');
const { startBaton } = require('./baton-server');

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

test('a semaphore admits up to its limit, each with its own token', async () => {
  const key = uniqueKey('sem');
  const a = await client.lock(key, { ttl: 10, limit: 2 });
  const b = await client.lock(key, { ttl: 10, limit: 2 });
  assert.notEqual(a.index, b.index);
  const resp = await client.get(key);
  assert.equal(resp.limit, 2);
  assert.deepEqual(
    resp.holders.map((h) => BigInt(h.index)),
    [a.index, b.index],
  );
  await assert.rejects(client.lock(key, { limit: 2, timeout: 0 }), LockTimeout);
  await assert.rejects(client.lock(key, { limit: 3, timeout: 0 }), (e) => {
    assert.ok(e instanceof LimitMismatch, String(e));
    assert.match(e.details, /limit 2/);
    return true;
  });
  assert.equal((await client.check(key, a.index)).current, true);
  await a.release();
  const check = await client.check(key, a.index);
  assert.equal(check.current, false);
  assert.deepEqual(
    check.holders.map((h) => h.index),
    [b.index],
  );
  await b.release();
});

test('a lock-delay holds off the next holder after an expiry', async () => {
  const key = uniqueKey('delay');
  const first = await client.lock(key, { ttl: 0.3, lockDelay: 1, renew: false });
  const resp = await client.get(key);
  assert.equal(Number(resp.holders[0].lockDelayMs), 1000);
  const until = first.deadlineUnixMs + 1000;
  const second = await client.lock(key, { ttl: 10, timeout: 20 });
  const granted = second.deadlineUnixMs - 10000;
  assert.ok(granted >= until, `granted ${until - granted} ms inside the delay`);
  await second.release();
  await first.release().catch(() => {});
});
