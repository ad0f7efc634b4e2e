'use strict';
// Starts a real baton (`--memory`, port 0) for a test file. The binary is
// $BATON_BIN, or <repo>/target/debug/baton; a missing binary fails the tests.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..', '..');
const LISTENING = /^baton listening on http:\/\/(127\.0\.0\.1:\d+)$/;

function binary() {
  const bin = process.env.BATON_BIN || path.join(REPO, 'target', 'debug', 'baton');
  return path.isAbsolute(bin) ? bin : path.join(REPO, bin);
}

/** Resolves to { target, stop() } once baton printed its listening line. */
function startBaton({ timeoutMs = 30000 } = {}) {
  const bin = binary();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    return Promise.reject(new Error(`baton binary not found at ${bin}: run 'cargo build --bins' or set BATON_BIN`));
  }
  const proc = spawn(bin, ['--memory', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
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

module.exports = { startBaton };
