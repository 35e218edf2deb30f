import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain, until } from './testing/run-process.js';

// Debian's chromium (see .ci/run). Without it the test is skipped, loudly, unless
// RINGTRAIN_EXPECT_BROWSER=1 (CI) makes a missing browser a failure.
const CHROMIUM = process.env.RINGTRAIN_CHROMIUM ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) {
  if (process.env.RINGTRAIN_EXPECT_BROWSER === '1') throw new Error(`RINGTRAIN_EXPECT_BROWSER=1 but there is no browser at ${CHROMIUM} (apt-get install chromium)`);
  console.warn(`dashboard test skipped: no browser at ${CHROMIUM} (apt-get install chromium)`);
}
const artifacts = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

let browser: Browser | null = null;
afterEach(killStarted);
afterAll(async () => browser?.close());

describe.skipIf(!haveBrowser)('the dashboard in a real headless Chromium', () => {
  it('loads without console errors, its charts gain points as the run advances and mark a worker lost, it lists every rank, checkpoint and membership change, and an admin can ask for a checkpoint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-dash-'));
    // Rank 1 dies at step 40: launch replaces it, and the charts mark the membership change.
    const run = startRingtrain(['launch', '--workers', '3', '--hidden', '1024,512', '--epochs', '10', '--checkpoint-dir', dir, '--status-token', 'reader', '--admin-token', 'boss', '--linger', '60'], { RINGTRAIN_FAULT_KILL: '1@40' });
    await until(() => run.lines.some((l) => typeof l.dashboard === 'string'), 20_000, 'the dashboard address', run);
    const dashboard = String(run.lines.find((l) => typeof l.dashboard === 'string')!.dashboard);
    // The admin's view: the same page, with the control buttons.
    const url = `${dashboard}?token=boss`;

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(url);

    const points = (id: string) => page.$eval(`#${id}`, (el) => Number((el as HTMLElement).dataset.points));
    await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#chart-loss')!.dataset.points) > 0, null, { timeout: 30_000 });
    const first = await points('chart-loss');
    await page.waitForFunction((n) => Number(document.querySelector<HTMLElement>('#chart-rate')!.dataset.points) > n + 3, first, { timeout: 30_000 });
    await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#chart-accuracy')!.dataset.points) >= 2, null, { timeout: 60_000 });
    expect(await points('chart-time')).toBeGreaterThan(first);
    expect(await points('chart-ranks')).toBeGreaterThan(first);
    expect(await page.$eval('#chart-ranks', (el) => (el as HTMLElement).dataset.series)).toBe('3');
    const ranks = await page.$$eval('#ranks tbody tr', (rows) => rows.map((r) => [r.cells[0].textContent, r.cells[2].textContent]));
    expect(ranks.map((r) => r[0])).toEqual(['0', '1', '2']);
    expect(ranks.every((r) => r[1] === 'training' || r[1] === 'slow' || r[1] === 'done')).toBe(true);
    expect(await page.textContent('#state')).toMatch(/running|finished/);
    expect(await page.$$eval('#health tbody tr', (rows) => rows.length)).toBe(6); // 3 dense layers: weight + bias
    expect(await page.isVisible('#checkpoint-now')).toBe(true);
    await page.waitForFunction(() => document.querySelectorAll('#checkpoints tbody tr').length >= 1, null, { timeout: 30_000 });
    await page.click('#checkpoint-now');
    await page.waitForFunction(() => /rank 0 writes a checkpoint/.test(document.querySelector('#connection')!.textContent ?? ''), null, { timeout: 10_000 });
    // A reader sees the same run, without the buttons.
    const reader = await browser.newPage();
    reader.on('pageerror', (e) => errors.push(e.message));
    await reader.goto(`${dashboard}?token=reader`);
    await reader.waitForFunction(() => document.querySelectorAll('#ranks tbody tr').length === 3, null, { timeout: 10_000 });
    expect(await reader.isVisible('#checkpoint-now')).toBe(false);
    await reader.close();
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: `${artifacts}dashboard.png`, fullPage: true });

    await page.waitForFunction(() => document.querySelector('#state')!.textContent === 'finished', null, { timeout: 60_000 });
    // The fault: listed with its cause and step, and a dashed line on every step chart.
    expect(await page.$$eval('#generations li', (items) => items.map((li) => li.textContent))).toEqual([expect.stringMatching(/^generation 2 at step 40: fault: .*rank 1.*; 3 workers, training again after \d+ ms$/)]);
    for (const id of ['chart-loss', 'chart-rate', 'chart-time']) expect(await page.$eval(`#${id}`, (el) => (el as HTMLElement).dataset.marks), id).toBe('1');
    expect(await page.$eval('[data-fact="test accuracy"]', (el) => el.textContent)).toMatch(/^\d+\.\d\d%$/);
    expect(errors).toEqual([]);
    // Everything came from the coordinator: no CDN.
    const origin = new URL(url).origin;
    expect(requests.filter((r) => !r.startsWith(origin) && !r.startsWith('data:'))).toEqual([]);
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 150_000);

  it("a language model's run says what fits it: validation loss, bits per character, perplexity and tokens/s, not accuracy", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-dash-lm-'));
    const text = join(dir, 'text.txt');
    writeFileSync(text, 'the cat sat on the mat. '.repeat(400));
    const job = join(dir, 'job.json');
    writeFileSync(job, JSON.stringify({ model: { type: 'gpt', layers: 1, heads: 2, dim: 16, context: 8 }, dataset: { source: 'text', file: text }, optimizer: { type: 'adamw', lr: 0.003 }, batchSize: 4, epochs: 1, steps: 30, evalBatchSize: 64, evalEvery: 10, seed: 1 }));
    const run = startRingtrain(['launch', '--workers', '2', '--config', job, '--linger', '60']);
    await until(() => run.lines.some((l) => typeof l.dashboard === 'string'), 20_000, 'the dashboard address', run);
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(String(run.lines.find((l) => typeof l.dashboard === 'string')!.dashboard));
    await page.waitForFunction(() => document.querySelector('#state')!.textContent === 'finished', null, { timeout: 60_000 });
    await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#chart-accuracy')!.dataset.points) === 3, null, { timeout: 10_000 });
    expect(await page.textContent('#caption-accuracy')).toBe('Validation bits per character');
    expect(await page.textContent('#caption-rate')).toBe('Tokens/s (all ranks)');
    expect(await page.textContent('#caption-loss')).toBe('Loss per token (training, validation)');
    expect(await page.$eval('[data-fact="val loss"]', (el) => el.textContent)).toMatch(/^\d\.\d{4} at step 30$/);
    expect(await page.$eval('[data-fact="bits/char"]', (el) => el.textContent)).toMatch(/^\d\.\d{3}$/);
    expect(await page.$eval('[data-fact="perplexity"]', (el) => el.textContent)).toMatch(/^\d+\.\d\d$/);
    expect(await page.$('[data-fact="test accuracy"]')).toBeNull();
    expect(await page.textContent('body')).not.toMatch(/accuracy/i);
    expect(errors).toEqual([]);
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 90_000);
});
