'use strict';
// The dashboard against a baton with --auth-file, in headless Chromium: it
// asks for a token once (a dialog), keeps it in sessionStorage for the tab,
// and shows only what the token may read, in the list and in the live feed.
//
//   bash dashboard/e2e/test.sh     # runs this file after dashboard.test.js

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { REPO, startBaton, curl } = require('./baton');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'test-artifacts');
const WAIT_MS = 15000;
const DEPLOYER = 'deployer-secret-0001';
const OPS = 'ops-secret-000000001';

let baton;
let browser;
let page;
let base;
let dir;
const pageErrors = [];

async function until(what, fn, arg, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const seen = await page
      .evaluate(() => ({
        conn: document.getElementById('conn-text').textContent,
        dialog: document.getElementById('token-dialog').open,
        keys: [...document.querySelectorAll('#keys-body tr')].map((tr) => tr.dataset.key),
        state: document.getElementById('keys-state').textContent,
      }))
      .catch(() => ({}));
    throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${e.message.split('\n')[0]}\npage: ${JSON.stringify(seen)}`);
  }
}

const keys = () => page.evaluate(() => [...document.querySelectorAll('#keys-body tr')].map((tr) => tr.dataset.key));
const lock = (key) => curl(['-X', 'POST', '-H', `Authorization: Bearer ${OPS}`, `${base}/mod/v2/lock/${key}?ttl=120`]);

describe('the dashboard with --auth-file', { timeout: 120000 }, () => {
  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'baton-dash-auth-'));
    const file = path.join(dir, 'auth.toml');
    fs.writeFileSync(
      file,
      `[[token]]\nname = "deployer"\nsecret = "${DEPLOYER}"\nprefixes = ["jobs/"]\nrights = ["read", "write"]\n\n` +
        `[[token]]\nname = "ops"\nsecret = "${OPS}"\nprefixes = [""]\nrights = ["read", "write"]\n`,
      { mode: 0o600 },
    );
    baton = await startBaton({ args: ['--auth-file', file] });
    base = `http://${baton.addr}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 60000,
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // 401s before the token is entered are expected; nothing else is.
      if (m.type() === 'error' && !/401|403|net::ERR_/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
    });
    await lock('jobs/1');
    await lock('web/1');
  });

  after(async () => {
    if (page && process.exitCode) {
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-auth-failure.png'), fullPage: true }).catch(() => {});
    }
    if (browser) await browser.close().catch(() => {});
    if (baton) await baton.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('asks for a token, refuses a wrong one and asks again', async () => {
    await page.goto(`${base}/mod/dashboard/`);
    await until('the token dialog', () => document.getElementById('token-dialog').open);
    assert.match(await page.textContent('#token-text'), /requires a token/);
    await page.fill('#token-input', 'not-a-token-0000000000');
    await page.click('#token-ok');
    await until('the dialog again, saying the token was refused', () =>
      document.getElementById('token-dialog').open && /refused the token/.test(document.getElementById('token-text').textContent));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('baton.token')), null);
  });

  it('with a token, shows only the keys it may read, live', async () => {
    await page.fill('#token-input', DEPLOYER);
    await page.click('#token-ok');
    await until('the watch to be live', () => document.getElementById('conn-text').textContent === 'Live');
    await until('jobs/1 in the list', () => !!document.querySelector('#keys-body tr[data-key="jobs/1"]'));
    assert.deepEqual(await keys(), ['jobs/1']);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('baton.token')), DEPLOYER);
    // web/2 first, then jobs/2: once jobs/2 shows, web/2 would have too.
    await lock('web/2');
    await lock('jobs/2');
    await until('jobs/2 in the list', () => !!document.querySelector('#keys-body tr[data-key="jobs/2"]'));
    assert.deepEqual(await keys(), ['jobs/1', 'jobs/2']);
    const feed = await page.textContent('#events');
    assert.ok(feed.includes('jobs/2') && !feed.includes('web/'), `feed: ${feed}`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-auth.png') });
  });

  it('asks only once: a reload keeps the token for the tab', async () => {
    await page.reload();
    await until('the watch to be live', () => document.getElementById('conn-text').textContent === 'Live');
    await until('jobs/1 in the list', () => !!document.querySelector('#keys-body tr[data-key="jobs/1"]'));
    assert.equal(await page.evaluate(() => document.getElementById('token-dialog').open), false);
    assert.deepEqual(await keys(), ['jobs/1', 'jobs/2']);
  });

  it('logged no page errors (exceptions, CSP violations)', () => {
    assert.deepEqual(pageErrors, []);
  });
});
