'use strict';
// End-to-end test of the dashboard at /mod/dashboard/ in a real headless
// Chromium (Debian's `chromium`, driven by playwright-core). It starts baton,
// changes locks with curl as a user would, and checks what the page shows:
// holder and falling TTL, the queue, release through the confirmation
// dialog, an expiry in the events feed, search and paging, a narrow window,
// and the disconnected state with its automatic reconnect.
//
//   bash dashboard/e2e/test.sh     # CHROMIUM=/path/to/chromium, BATON_BIN=...
//
// The screenshot is saved to <repo>/test-artifacts/dashboard.png.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { REPO, startBaton, curl, curlInBackground } = require('./baton');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'test-artifacts');
const WAIT_MS = 15000; // generous: a 2-core machine running other suites

let baton;
let browser;
let page;
let base;
const pageErrors = [];
const background = [];

/** Waits for a predicate evaluated in the page; a clear error on timeout. */
async function until(what, fn, arg, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const seen = await page
      .evaluate(() => ({
        conn: document.getElementById('conn-text').textContent,
        page: document.getElementById('page-info').textContent,
        keys: [...document.querySelectorAll('#keys-body tr')].map((tr) => tr.dataset.key).slice(0, 12),
        state: document.getElementById('keys-state').textContent,
        detail: document.getElementById('detail-body').textContent.slice(0, 300),
      }))
      .catch(() => ({}));
    throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${e.message.split('\n')[0]}\npage: ${JSON.stringify(seen)}`);
  }
}

/** The text of the first element matching sel, trimmed ('' if none). */
async function text(sel) {
  return page.evaluate((s) => {
    const n = document.querySelector(s);
    return n ? n.textContent.trim() : '';
  }, sel);
}

/** "4.2s", "55s", "3m 05s", "2h 07m" in milliseconds. */
function parseDuration(s) {
  const m = /^(?:(\d+)h\s*)?(?:(\d+)m\s*)?(?:(\d+(?:\.\d+)?)s)?$/.exec(s.trim());
  assert.ok(m && s.trim() !== '', `not a duration: ${JSON.stringify(s)}`);
  return Math.round(((Number(m[1] || 0) * 60 + Number(m[2] || 0)) * 60 + Number(m[3] || 0)) * 1000);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const row = (key) => `#keys-body tr[data-key="${key}"]`;

describe('baton dashboard in headless Chromium', { timeout: 240000 }, () => {
  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    baton = await startBaton();
    base = `http://${baton.addr}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 60000,
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // A dropped connection is expected in the last step; anything else
      // (a CSP violation, an exception) is a bug.
      if (m.type() === 'error' && !/ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|net::ERR_/.test(m.text())) {
        pageErrors.push(`console: ${m.text()}`);
      }
    });
  });

  after(async () => {
    for (const b of background) b.kill();
    if (page && process.exitCode) {
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
    }
    if (browser) await browser.close().catch(() => {});
    if (baton) await baton.stop();
  });

  it('redirects /mod/dashboard, loads live, and shows the empty state and server facts', async () => {
    await page.goto(`${base}/mod/dashboard`);
    assert.equal(new URL(page.url()).pathname, '/mod/dashboard/');
    await until('the watch to be live', () => document.getElementById('conn-text').textContent === 'Live');
    await until('the empty state', () => /No locks or elections yet/.test(document.getElementById('keys-state').textContent));
    await until('server facts', () => document.getElementById('f-backend').textContent === 'embedded');
    await until('the role', () => document.getElementById('f-role').textContent === 'embedded');
    assert.match(await text('#f-version'), /^\d+\.\d+\.\d+/);
    assert.equal(await text('#f-keys'), '0');
    assert.equal(await page.isVisible('#banner'), false);
  });

  let firstIndex;
  it('shows a lock taken with curl, with its holder and a falling TTL', async () => {
    firstIndex = (await curl(['-X', 'POST', `${base}/mod/v2/lock/e2e-lock?ttl=60`, '-d', 'value=first'])).trim();
    assert.match(firstIndex, /^\d+$/);
    await until('the lock row with its holder', (k) => {
      const tr = document.querySelector(`#keys-body tr[data-key="${k.key}"]`);
      return tr && tr.querySelector('.c-holder').textContent === 'first' && tr.querySelector('.c-index').textContent === k.index;
    }, { key: 'e2e-lock', index: firstIndex });
    assert.equal(await text('#keys-state'), '', 'no empty/loading state once a key is shown');

    const ttl1 = parseDuration(await text(`${row('e2e-lock')} .ttl-text`));
    assert.ok(ttl1 > 50000 && ttl1 <= 60000, `TTL right after acquiring: ${ttl1} ms`);
    await sleep(2500);
    const ttl2 = parseDuration(await text(`${row('e2e-lock')} .ttl-text`));
    assert.ok(ttl2 < ttl1 && ttl1 - ttl2 >= 1000 && ttl1 - ttl2 <= 6000, `TTL should fall by about 2.5 s: ${ttl1} -> ${ttl2}`);

    // The detail pane: holder value, index and its own countdown.
    await page.click(`${row('e2e-lock')} .keybtn`);
    await until('the detail of e2e-lock', () => {
      const v = document.querySelector('#holder .holder-value');
      return document.getElementById('detail-title').textContent === 'e2e-lock' && v && v.textContent === 'first';
    });
    assert.equal(await text('#holder .holder-index'), firstIndex);
    const d1 = parseDuration(await text('#holder .holder-ttl'));
    await sleep(1500);
    const d2 = parseDuration(await text('#holder .holder-ttl'));
    assert.ok(d2 < d1 && d2 > 40000, `detail TTL should fall: ${d1} -> ${d2}`);
    assert.equal(new URL(page.url()).hash, '#key=e2e-lock', 'the selection is kept in the URL');
  });

  let waiter;
  let waiterIndex;
  it('shows a queued waiter in the queue of the selected key', async () => {
    waiter = curlInBackground(['-X', 'POST', `${base}/mod/v2/lock/e2e-lock?ttl=60`, '-d', 'value=second']);
    background.push(waiter);
    await until('the waiter in the queue', () => {
      const q = document.querySelector('.queue-table tbody tr');
      return q && q.querySelector('.q-value').textContent === 'second';
    });
    waiterIndex = await page.getAttribute('.queue-table tbody tr', 'data-index');
    assert.match(waiterIndex, /^\d+$/);
    assert.ok(BigInt(waiterIndex) > BigInt(firstIndex), 'the waiter gets a later index');
    assert.equal(await text('.queue-table tbody tr .q-index'), waiterIndex);
    await until('the queue length in the list', () => document.querySelector('#keys-body tr[data-key="e2e-lock"] .c-queue').textContent === '1');
    await until('a waiting time', () => /\d/.test(document.querySelector('.queue-table .waited').textContent));
    await until('the queued event', () => document.querySelector('#events li[data-kind="queued"][data-key="e2e-lock"]') !== null);
    assert.equal(await text('#holder .holder-value'), 'first', 'the holder is unchanged');
  });

  it('cancels the release dialog with the keyboard and releases nothing', async () => {
    await page.focus('#release-holder');
    await page.keyboard.press('Enter');
    await until('the dialog to open', () => document.getElementById('confirm').open);
    await page.keyboard.press('Escape');
    await until('the dialog to close', () => !document.getElementById('confirm').open);
    await sleep(500);
    assert.equal(await text('#holder .holder-value'), 'first');
    assert.equal(await text('#holder .holder-index'), firstIndex);
    const api = JSON.parse(await curl(['-X', 'POST', `${base}/v1/lock/get`, '-d', '{"key":"e2e-lock"}']));
    assert.equal(api.holder.index, firstIndex, 'cancel must not release');
  });

  it('releases the holder through the page and shows the waiter become holder', async () => {
    await page.click('#release-holder');
    await until('the confirmation dialog', () => document.getElementById('confirm').open);
    const question = await text('#confirm-text');
    assert.match(question, /e2e-lock/);
    assert.match(question, new RegExp(`index ${firstIndex}\\b`));
    await page.click('#confirm-ok');
    const { code, stdout } = await Promise.race([
      waiter.done,
      sleep(WAIT_MS).then(() => ({ code: 'timeout', stdout: '' })),
    ]);
    assert.equal(code, 0, 'the waiting curl returns once it acquires');
    assert.equal(stdout.trim(), waiterIndex, 'the waiter acquired with its queued index');
    await until('the waiter as holder in the detail', (idx) => {
      const v = document.querySelector('#holder .holder-value');
      const i = document.querySelector('#holder .holder-index');
      return v && v.textContent === 'second' && i && i.textContent === idx;
    }, waiterIndex);
    await until('the list row to follow', (idx) => {
      const tr = document.querySelector('#keys-body tr[data-key="e2e-lock"]');
      return tr && tr.querySelector('.c-holder').textContent === 'second' && tr.querySelector('.c-index').textContent === idx && tr.querySelector('.c-queue').textContent === '0';
    }, waiterIndex);
    assert.equal(await page.$('.queue-table'), null, 'the queue is empty');
    await until('released and acquired events', (idx) => {
      const evs = [...document.querySelectorAll('#events li[data-key="e2e-lock"]')].map((li) => li.dataset.kind);
      return evs.includes('released') && evs.includes('acquired') && document.querySelector('#events li[data-kind="acquired"]').textContent.includes(`#${idx}`);
    }, waiterIndex);
    await until('a confirmation notice', () => /Released index/.test(document.getElementById('notice').textContent));
  });

  it('shows an expiry in the events feed', async () => {
    const idx = (await curl(['-X', 'POST', `${base}/mod/v2/lock/e2e-short?ttl=1`, '-d', 'value=brief'])).trim();
    await until('the expired event', (i) => {
      const li = document.querySelector('#events li[data-kind="expired"][data-key="e2e-short"]');
      return li && li.textContent.includes(`#${i}`) && li.textContent.includes('brief');
    }, idx, WAIT_MS);
    await until('the expired key to leave the list', () => document.querySelector('#keys-body tr[data-key="e2e-short"]') === null);
    // Newest first: the expiry is above the acquisition of the same key.
    const kinds = await page.$$eval('#events li[data-key="e2e-short"]', (lis) => lis.map((li) => li.dataset.kind));
    assert.deepEqual(kinds.slice(0, 2), ['expired', 'acquired']);
  });

  it('saves a screenshot with a holder, a queue, an election and the feed', async () => {
    await curl(['-X', 'PUT', `${base}/mod/v2/leader/e2e-election?ttl=300`, '-d', 'name=node-a.example.com']);
    const third = curlInBackground(['-X', 'POST', `${base}/mod/v2/lock/e2e-lock?ttl=30`, '-d', 'value=third']);
    background.push(third);
    await until('the election row', () => {
      const tr = document.querySelector('#keys-body tr[data-key="e2e-election"]');
      return tr && tr.querySelector('.c-holder').textContent === 'node-a.example.com';
    });
    await until('the third waiter', () => {
      const q = document.querySelector('.queue-table tbody tr .q-value');
      return q && q.textContent === 'third';
    });
    await until('status facts to follow the events', () => document.getElementById('f-keys').textContent === '2');
    await until('the notice to fade', () => document.getElementById('notice').hidden, undefined, 20000);
    await sleep(1500); // let the row highlight fade
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    assert.ok(fs.statSync(path.join(ARTIFACTS, 'dashboard.png')).size > 10000);
  });

  it('searches by prefix and pages through many keys', async () => {
    for (let i = 0; i < 60; i++) {
      await curl(['-X', 'POST', `${base}/mod/v2/lock/bulk/${String(i).padStart(3, '0')}?ttl=0`]);
    }
    await page.selectOption('#page-size', '50');
    await page.fill('#prefix', 'bulk/');
    await until('a page of 50 bulk keys', () => {
      if (new URLSearchParams(location.hash.slice(1)).get('prefix') !== 'bulk/') return false;
      if (document.getElementById('events-scope').textContent !== 'under “bulk/”') return false;
      const keys = [...document.querySelectorAll('#keys-body tr')].map((tr) => tr.dataset.key);
      return keys.length === 50 && keys.every((k) => k.startsWith('bulk/')) && keys[0] === 'bulk/000';
    });
    assert.equal(await page.isEnabled('#next'), true);
    assert.equal(await page.isEnabled('#prev'), false);
    assert.equal(await text(`${row('bulk/000')} .ttl-text`), 'never', 'ttl=0 never expires');
    await page.click('#next');
    await until('the second page', () => {
      const keys = [...document.querySelectorAll('#keys-body tr')].map((tr) => tr.dataset.key);
      return keys.length === 10 && keys[0] === 'bulk/050' && keys[9] === 'bulk/059';
    });
    assert.equal(await page.isEnabled('#next'), false);
    // A key created under the prefix after the last page's start shows up live.
    await curl(['-X', 'POST', `${base}/mod/v2/lock/bulk/999?ttl=0`]);
    await until('a new key on the last page', () => document.querySelector('#keys-body tr[data-key="bulk/999"]') !== null);
    await page.click('#prev');
    await until('the first page again', () => document.querySelectorAll('#keys-body tr').length === 50);
    await page.fill('#prefix', 'nothing-here/');
    await until('the empty state for a prefix', () => /No locks or elections under “nothing-here\/”/.test(document.getElementById('keys-state').textContent));
    await page.fill('#prefix', '');
    await page.selectOption('#page-size', '100');
    await until('all keys again', () => document.querySelector('#keys-body tr[data-key="e2e-lock"]') !== null);
  });

  it('fits a narrow window without horizontal scrolling', async () => {
    await page.setViewportSize({ width: 380, height: 800 });
    await sleep(300);
    const { overflow, wide } = await page.evaluate(() => ({
      overflow: document.documentElement.scrollWidth - window.innerWidth,
      wide: [...document.querySelectorAll('body *')]
        .filter((n) => n.getBoundingClientRect().right > window.innerWidth + 0.5 || n.scrollWidth > window.innerWidth)
        .slice(0, 8)
        .map((n) => `${n.tagName.toLowerCase()}${n.id ? `#${n.id}` : ''}.${n.className} (right ${Math.round(n.getBoundingClientRect().right)}, scrollWidth ${n.scrollWidth})`),
    }));
    assert.ok(overflow <= 0, `page is ${overflow}px wider than a 380px window: ${wide.join(', ')}`);
    // The list itself fits too (the index column hides; the detail shows it).
    const listOverflow = await page.evaluate(() => {
      const w = document.querySelector('#keys-panel .table-wrap');
      return w.scrollWidth - w.clientWidth;
    });
    assert.ok(listOverflow <= 1, `the key table scrolls sideways by ${listOverflow}px at 380px`); // 1px: subpixel rounding
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-narrow.png') });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('shows the disconnected state and reconnects by itself when baton is back', async () => {
    const addr = baton.addr;
    for (const b of background) b.kill();
    await baton.stop();
    await until('the reconnecting state', () => document.getElementById('conn-text').textContent === 'Reconnecting…' && !document.getElementById('banner').hidden);
    assert.match(await text('#banner-text'), /Reconnecting automatically/);
    // The same address again (a fresh, empty in-memory baton).
    let restarted = null;
    for (let attempt = 0; attempt < 20 && !restarted; attempt++) {
      try {
        restarted = await startBaton({ listen: addr });
      } catch (e) {
        if (attempt === 19) throw e;
        await sleep(500);
      }
    }
    baton = restarted;
    await until('the live state again', () => document.getElementById('conn-text').textContent === 'Live' && document.getElementById('banner').hidden, undefined, 30000);
    await until('the fresh snapshot (no keys)', () => /No locks or elections yet/.test(document.getElementById('keys-state').textContent));
    await curl(['-X', 'POST', `${base}/mod/v2/lock/after-restart?ttl=60`, '-d', 'value=back']);
    await until('live updates after the reconnect', () => {
      const tr = document.querySelector('#keys-body tr[data-key="after-restart"]');
      return tr && tr.querySelector('.c-holder').textContent === 'back';
    });
  });

  it('shows a semaphore\'s holders and a running lock-delay', async () => {
    const wait = (body) => {
      const p = curlInBackground(['-N', '-X', 'POST', `${base}/v1/lock/wait`, '-d', JSON.stringify(body)]);
      background.push(p);
    };
    // Two curl processes race to the server: let "a" hold before "b" asks,
    // so the oldest holder is known.
    wait({ key: 'e2e-sem', value: 'a', ttlMs: '60000', limit: 2 });
    await until('the semaphore in the list', (r) => document.querySelector(r) !== null, row('e2e-sem'));
    wait({ key: 'e2e-sem', value: 'b', ttlMs: '60000', limit: 2 });
    await page.click(`${row('e2e-sem')} .keybtn`);
    await until('both holders', () => /Semaphore · 2 of 2 held/.test(document.getElementById('detail-sub').textContent));
    assert.equal(await text('#holder .holder-value'), 'a');
    await until('the other holder', () => {
      const tr = document.querySelector('#other-holders tbody tr');
      return tr !== null && tr.textContent.includes('b');
    });

    // A hold with a 60 s lock-delay that expires after 0.3 s: the key is
    // shown as delayed.
    wait({ key: 'e2e-delay', value: 'gone', ttlMs: '300', lockDelayMs: '60000' });
    await until('the delayed key in the list', (r) => document.querySelector(r) !== null, row('e2e-delay'));
    await page.click(`${row('e2e-delay')} .keybtn`);
    await until('the lock-delay notice', () => {
      const n = document.getElementById('lock-delay');
      return n !== null && /nobody new is granted/.test(n.textContent);
    });
  });

  it('logged no page errors (exceptions, CSP violations)', () => {
    assert.deepEqual(pageErrors, []);
  });
});
