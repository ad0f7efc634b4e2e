'use strict';
// Test support: a real baton process (`--memory`) and curl, as a user runs them.
// The binary is $BATON_BIN, or <repo>/target/debug/baton.

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..');
const LISTENING = /^baton listening on http:\/\/(127\.0\.0\.1:\d+)$/;

function binary() {
  const bin = process.env.BATON_BIN || path.join(REPO, 'target', 'debug', 'baton');
  return path.isAbsolute(bin) ? bin : path.join(REPO, bin);
}

/**
 * Starts `baton --memory --listen LISTEN ARGS` and resolves to {addr, stop(), log()}
 * once it printed its listening line.
 */
function startBaton({ listen = '127.0.0.1:0', timeoutMs = 30000, args = [] } = {}) {
  const bin = binary();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    return Promise.reject(new Error(`baton binary not found at ${bin}: run 'cargo build --bins' or set BATON_BIN`));
  }
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
  delete env.BATON_DASHBOARD_DIR; // test the page compiled into the binary
  const proc = spawn(bin, ['--memory', '--listen', listen, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
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
        resolve({ addr: m[1], stop, log: () => log });
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

/** Runs curl to completion; resolves to its stdout, rejects on a non-zero exit. */
function curl(args, { timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '--max-time', String(Math.ceil(timeoutMs / 1000)), ...args], (err, stdout, stderr) => {
      if (err) reject(new Error(`curl ${args.join(' ')} failed: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * Starts curl in the background (a blocking lock request); returns
 * {done: Promise<{code, stdout}>, kill()}.
 */
function curlInBackground(args) {
  const proc = spawn('curl', ['-sS', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => {
    stdout += d;
  });
  proc.stderr.on('data', (d) => {
    stderr += d;
  });
  const done = new Promise((resolve) => proc.on('close', (code) => resolve({ code, stdout, stderr })));
  return {
    done,
    kill: () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    },
  };
}

module.exports = { REPO, startBaton, curl, curlInBackground };
