// Drives the status page of a dfs node in headless Chromium (Playwright),
// for tests/status_page.rs, which starts the cluster and kills a node.
//
// usage: node status_page.cjs URL MEMBERS [SCREENSHOT.png]
// Prints one JSON line once MEMBERS members show alive, then waits for a
// line on stdin (a member was killed), waits for the page to show one
// member down by itself (no reload), and prints a second JSON line.
// Exits non-zero, saying why, on any failure.
'use strict';
const { chromium } = require('playwright-core');
const readline = require('readline');

const [url, members, screenshot] = process.argv.slice(2);
const expected = Number(members);

function nextLine() {
  return new Promise((resolve) => {
    const input = readline.createInterface({ input: process.stdin });
    input.once('line', (line) => { input.close(); resolve(line); });
  });
}

async function rows(page) {
  return page.$$eval('#members tbody tr', (trs) =>
    trs.map((tr) => ({ node: tr.dataset.node, state: tr.dataset.state, text: tr.innerText })));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // This machine's network is closed: Chromium's own background traffic
    // would only fail (see the tool library's notes on Chromium).
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
    const origin = new URL(url).origin;
    const elsewhere = [];
    const errors = [];
    page.on('request', (r) => { if (!r.url().startsWith(origin)) elsewhere.push(r.url()); });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(url);
    // Set once: still there at the end means the page refreshed itself
    // without a reload.
    await page.evaluate(() => { window.loadedOnce = true; });
    await page.waitForFunction(
      (n) => document.querySelectorAll('#members tbody tr[data-state="alive"]').length === n,
      expected, { timeout: 30000 });
    console.log(JSON.stringify({ step: 'alive', rows: await rows(page), title: await page.title() }));

    await nextLine();
    await page.waitForFunction(
      () => document.querySelectorAll('#members tbody tr[data-state="down"]').length === 1,
      null, { timeout: 60000, polling: 250 });
    const health = await page.$eval('#health', (h) => ({ class: h.className, text: h.innerText }));
    const summary = await page.$eval('#summary', (s) => s.innerText);
    const reloaded = !(await page.evaluate(() => window.loadedOnce === true));
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
    }
    console.log(JSON.stringify({
      step: 'down', rows: await rows(page), health, summary, reloaded, elsewhere, errors,
    }));
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
