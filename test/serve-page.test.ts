import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodePng } from './helpers/png.js';
import { startServer } from './helpers/serve.js';

const CHROMIUM = '/usr/bin/chromium';
/** No network, no updates, no GPU: a browser that only talks to the test's server. */
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The page's colour ramp (app.js), end points: lowest and highest score of the selected head. */
const LOW = [68, 1, 84], HIGH = [253, 231, 37];

test('the page shows what two presses keep, with the selected head as a heat map (headless Chromium)', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent: install Debian's chromium (apt-get install chromium; .ci/run does)` }, async () => {
  const { chromium } = await import('playwright-core');
  const server = await startServer();
  const profile = mkdtempSync(join(tmpdir(), 'kvpress-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1400, height: 1000 } });
  try {
    const page = browser.pages()[0] ?? (await browser.newPage());
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/`);
    await page.waitForSelector('#configA .press option[value="snapkv"]', { state: 'attached' });
    await page.selectOption('#configA .press', 'snapkv');
    await page.fill('#configA .ratio', '0.5');
    await page.fill('#configA .options', '{"windowSize": 8}');
    await page.check('#compare');
    await page.selectOption('#configB .press', 'streaming_llm');
    await page.fill('#configB .ratio', '0.75');
    await page.click('#run');
    await page.waitForSelector('#panelB canvas.heatmap[data-ready="1"]');
    assert.deepEqual(errors, []);
    assert.equal(await page.textContent('#status'), '');

    // The numbers on the page are the endpoint's: tokens, kept entries per (layer, head), bytes.
    const ref = (await (await fetch(`${server.url}/v1/kvpress/scores`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: await page.inputValue('#text'), press: 'snapkv', compression_ratio: 0.5, options: { windowSize: 8 } }) })).json()) as any;
    assert.equal(await page.locator('#panelA .tokens span').count(), ref.tokens.length);
    const cells = await page.locator('#panelA table.grid td').allTextContents();
    assert.deepEqual(cells.map(Number), ref.layers.flatMap((l: any) => l.kept.map((k: number[]) => k.length)));
    assert.match((await page.textContent('#panelA .bytes'))!, /50\.\d % removed|49\.\d % removed/);
    assert.match((await page.textContent('#panelB h2'))!, /streaming_llm · ratio 0.75/);

    // Pick layer 2, head 1: the heat map is redrawn for it.
    await page.click('#panelA table.grid td[data-layer="2"][data-head="1"]');
    assert.match((await page.textContent('#panelA .caption'))!, /Layer 2, head 1: scores from/);
    const kept = ref.layers[2].kept[1].length;
    assert.equal(await page.locator('#panelA .tokens span.sel-kept').count(), kept);

    // The screenshot of the heat map holds both ends of the colour ramp (the head's lowest and
    // highest score) and many cells between.
    const shot = decodePng(await page.locator('#panelA canvas.heatmap').screenshot());
    const near = (i: number, c: number[]) => Math.abs(shot.rgba[i] - c[0]) + Math.abs(shot.rgba[i + 1] - c[1]) + Math.abs(shot.rgba[i + 2] - c[2]) <= 12;
    let low = 0, high = 0;
    const colours = new Set<number>();
    for (let i = 0; i < shot.rgba.length; i += 4) {
      if (near(i, LOW)) low++;
      if (near(i, HIGH)) high++;
      colours.add((shot.rgba[i] << 16) | (shot.rgba[i + 1] << 8) | shot.rgba[i + 2]);
    }
    assert.ok(low >= 20 && high >= 20, `heat map ends: ${low} low pixels, ${high} high pixels`);
    if (process.env.KVPRESS_SHOT) await page.screenshot({ path: process.env.KVPRESS_SHOT, fullPage: true });
    assert.ok(colours.size >= 20, `${colours.size} colours in the heat map`);
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
    assert.equal(await server.stop(), 0);
  }
});
