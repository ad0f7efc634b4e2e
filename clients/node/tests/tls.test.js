'use strict';
// baton-client against a baton serving TLS with a throw-away CA.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { Client, BatonError, grpc } = require('..');
const { startBaton, makeCerts } = require('./baton-server');

let server;
let certs;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'baton-node-tls-'));
  certs = makeCerts(dir);
  server = await startBaton({ args: ['--tls-cert-file', certs.cert, '--tls-key-file', certs.key] });
});

after(async () => {
  if (server) await server.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('locks over TLS with the CA', async () => {
  const client = new Client(server.target, { credentials: grpc.credentials.createSsl(fs.readFileSync(certs.ca)) });
  try {
    const lock = await client.lock('node/tls', { ttl: 10 });
    assert.ok(lock.index > 0n);
    assert.equal(BigInt((await client.get('node/tls')).holder.index), lock.index);
    await lock.release();
    assert.equal((await client.get('node/tls')).holder, null);
  } finally {
    client.close();
  }
});

test('plaintext to the TLS port fails', async () => {
  const client = new Client(server.target, { rpcTimeout: 5 });
  try {
    await assert.rejects(client.get('node/tls'), BatonError);
  } finally {
    client.close();
  }
});

test('https without the CA is refused', async () => {
  const client = new Client(`https://${server.target}`, { rpcTimeout: 5 });
  try {
    await assert.rejects(client.get('node/tls'), BatonError);
  } finally {
    client.close();
  }
});
