'use strict';
// baton-client with a token, against a baton started with --auth-file.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { Client, Unauthenticated, PermissionDenied } = require('..');
const { startBaton } = require('./baton-server');

const DEPLOYER = 'deployer-secret-0001';
const READER = 'reader-secret-000001';

let server;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'baton-node-auth-'));
  const file = path.join(dir, 'auth.toml');
  fs.writeFileSync(
    file,
    `[[token]]
name = "deployer"
secret = "${DEPLOYER}"
prefixes = ["node/"]
rights = ["read", "write"]

[[token]]
name = "reader"
secret = "${READER}"
prefixes = [""]
rights = ["read"]
`,
    { mode: 0o600 },
  );
  server = await startBaton({ args: ['--auth-file', file] });
});

after(async () => {
  if (server) await server.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('without a token or with a wrong one, calls are refused', async () => {
  for (const opts of [{}, { token: 'not-a-token-0000000000' }]) {
    const client = new Client(server.target, opts);
    try {
      await assert.rejects(client.get('node/auth'), Unauthenticated);
      await assert.rejects(client.lock('node/auth', { ttl: 5 }), Unauthenticated);
    } finally {
      client.close();
    }
  }
});

test('a token locks within its prefixes and not outside', async () => {
  const client = new Client(server.target, { token: DEPLOYER });
  const reader = new Client(server.target, { token: READER });
  try {
    const lock = await client.lock('node/auth', { ttl: 10 });
    assert.ok(lock.index > 0n);
    assert.equal(BigInt((await reader.get('node/auth')).holder.index), lock.index);
    await assert.rejects(reader.lock('node/auth-ro', { ttl: 5, timeout: 0 }), PermissionDenied);
    await lock.release();
    await assert.rejects(client.get('elsewhere/auth'), PermissionDenied);
    await assert.rejects(client.campaign('elsewhere/e', 'me', { ttl: 5 }), PermissionDenied);
  } finally {
    client.close();
    reader.close();
  }
});
