'use strict';
// Starts a real baton (`--memory`, port 0) for a test file. The binary is
// $BATON_BIN, or <repo>/target/debug/baton; a missing binary fails the tests.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..', '..');
const LISTENING = /^baton listening on https?:\/\/(127\.0\.0\.1:\d+)$/;

function binary() {
  const bin = process.env.BATON_BIN || path.join(REPO, 'target', 'debug', 'baton');
  return path.isAbsolute(bin) ? bin : path.join(REPO, bin);
}

/** Resolves to { target, stop() } once baton printed its listening line. */
function startBaton({ timeoutMs = 30000, args = [] } = {}) {
  const bin = binary();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    return Promise.reject(new Error(`baton binary not found at ${bin}: run 'cargo build --bins' or set BATON_BIN`));
  }
  const proc = spawn(bin, ['--memory', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => {
    log += d;
    if (log.length > 100000) log = log.slice(-50000);
  });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(t);
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`baton did not print its listening line within ${timeoutMs} ms; log:\n${log}`));
    }, timeoutMs);
    const lines = readline.createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      const m = LISTENING.exec(line.trim());
      if (m) {
        clearTimeout(timer);
        resolve({ target: m[1], stop, log: () => log });
      }
    });
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`baton exited early (code ${code}, signal ${signal}); log:\n${log}`));
    });
  });
}

/**
 * A throw-away CA (ca.pem) and a server certificate for 127.0.0.1
 * (server.pem, server.key) in `dir`, made with the openssl command.
 */
function makeCerts(dir) {
  const { execFileSync } = require('node:child_process');
  const run = (...args) => {
    try {
      execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (e) {
      if (e.code === 'ENOENT') throw new Error('the TLS test needs the openssl command (scripts/install-test-deps.sh)');
      throw new Error(`openssl ${args.join(' ')}: ${e.stderr}`);
    }
  };
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=node test CA');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=server');
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

module.exports = { startBaton, makeCerts };
