import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHECKPOINT_FORMAT, writeSafetensors } from '@ringtrain/checkpoint';
import { decodeControl, encodeControl, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ringtrain-hardening-'));
const v = PROTOCOL_VERSION;

/** A checksummed ringtrain checkpoint whose spec claims `units`-wide layers while each tensor holds one float. */
function liarCheckpoint(units: number): string {
  const path = join(dir, `liar-${units}.safetensors`);
  const spec = { inputSize: 784, layers: [{ type: 'dense', units }, { type: 'relu' }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' };
  const config = { model: spec, dataset: { source: 'mnist-small' }, optimizer: { type: 'sgd', lr: 0.1 }, batchSize: 64, epochs: 1, seed: 1 };
  const one = (name: string) => ({ name, shape: [1], data: Float32Array.of(0.5) });
  writeSafetensors(path, [one('layers.0.weight'), one('layers.0.bias'), one('layers.2.weight'), one('layers.2.bias')], {
    format: CHECKPOINT_FORMAT, step: '1', epoch: '0', cursor: '0', world_size: '1', run_id: 'x', lineage: 'x', config_hash: '0000000000000000',
    config: JSON.stringify(config), model_spec: JSON.stringify(spec), optimizer: JSON.stringify({ type: 'sgd', step: 1, slots: [] }), rng: JSON.stringify({ dropout: [1, 2, 3, 4] }), metrics: '{}', saved_at: 'now',
  });
  return path;
}

describe('hardening (real processes)', () => {
  it('a small checkpoint that claims a huge model is refused before anything is allocated, by every command that builds it', () => {
    for (const [units, why] of [
      [32_768, /ERR_MODEL_MISMATCH: .*liar-32768.safetensors: its model spec has 26050570 parameters, its tensors hold 4/],
      [10_000_000, /ERR_MODEL_MISMATCH: .*invalid model spec: .*layers\.0\.units.*(<=|at most|too big)/i],
    ] as const) {
      const path = liarCheckpoint(units);
      const input = join(dir, 'row.csv');
      writeFileSync(input, `${Array.from({ length: 784 }, () => '0.5').join(',')}\n`);
      for (const cmd of [['evaluate', path], ['predict', path, '--input', input], ['export', path, '-o', join(dir, 'out.safetensors')]]) {
        const t0 = Date.now();
        const r = spawnSync(process.execPath, [main, ...cmd], { encoding: 'utf8', timeout: 30_000 });
        expect(r.status, `${cmd[0]}: ${r.stderr}`).toBe(1);
        expect(r.stderr, cmd[0]).toMatch(why);
        expect(Date.now() - t0, cmd[0]).toBeLessThan(5000);
      }
    }
  });

  it('`ringtrain status --json | head -1` ends quietly when the reader goes away', async () => {
    const run = startRingtrain(['launch', '--workers', '1', '--epochs', '3', '--linger', '20']);
    await expect.poll(() => run.lines.some((l) => String(l.msg).startsWith('coordinator listening')), { timeout: 20_000 }).toBe(true);
    const address = String(run.lines.find((l) => String(l.msg).startsWith('coordinator listening'))!.address);
    const r = spawnSync('sh', ['-c', `"${process.execPath}" "${main}" status --json ${address} | head -1`], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout.split('\n')[0]).toMatch(/^\{"v":1,"seq":1/);
    expect(r.stderr).not.toMatch(/EPIPE|Unhandled|Error/);
    run.proc.kill('SIGINT');
    await run.exited;
  }, 60_000);

  it('`status` and `control` against a server that refuses and never ends its answer: a message and exit 1 within the timeout, not a silent hang', async () => {
    const server = createServer((sock) => {
      sock.on('error', () => {});
      sock.once('data', () => sock.write('HTTP/1.1 401 Unauthorized\r\nContent-Length: 1000000\r\n\r\nwrong token'));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
    for (const args of [['status', url, '--timeout', '3'], ['control', url, 'stop', '--timeout', '3']]) {
      const t0 = Date.now();
      const r = startRingtrain(args);
      expect(await r.exited, args[0]).toBe(1);
      expect(r.stderr, args[0]).toMatch(/ringtrain: ERR_AUTH: the coordinator refused the status connection: 401 wrong token/);
      expect(Date.now() - t0, args[0]).toBeLessThan(6000);
    }
    server.close();
  }, 30_000);

  it('--save-final is resolved where it is given: the coordinator\'s folder, not the worker\'s', async () => {
    const [here, there] = [mkdtempSync(join(dir, 'coordinator-')), mkdtempSync(join(dir, 'worker-'))];
    const coord = startRingtrain(['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '1', '--epochs', '1', '--max-steps', '5', '--save-final', 'final.safetensors'], { RINGTRAIN_TOKEN: 't' }, here);
    await expect.poll(() => coord.lines.some((l) => String(l.msg).startsWith('coordinator listening')), { timeout: 20_000 }).toBe(true);
    const address = String(coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))!.address);
    const worker = startRingtrain(['worker', '--coordinator', address], { RINGTRAIN_TOKEN: 't' }, there);
    expect(await coord.exited, coord.stderr).toBe(0);
    expect(await worker.exited).toBe(0);
    expect(existsSync(join(here, 'final.safetensors'))).toBe(true);
    expect(existsSync(join(there, 'final.safetensors'))).toBe(false);
  }, 30_000);

  it('a run id that walks out of the checkpoint folder is refused: the file beside it is neither read nor written', async () => {
    const base = mkdtempSync(join(dir, 'run-id-'));
    mkdirSync(join(base, 'outside'));
    const sibling = join(base, 'outside', 'evil.json');
    writeFileSync(sibling, 'not the journal');
    const coord = startRingtrain(['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '1', '--epochs', '1', '--max-steps', '5', '--checkpoint-dir', join(base, 'ckpts'), '--json'], { RINGTRAIN_TOKEN: 't' });
    await expect.poll(() => coord.lines.some((l) => String(l.msg).startsWith('coordinator listening')), { timeout: 20_000 }).toBe(true);
    const address = String(coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))!.address);
    const attacker = new WebSocket(address, { headers: { 'x-ringtrain-token': 't' } });
    await new Promise((r, j) => (attacker.once('open', r), attacker.once('error', j)));
    // status-${runId}.json with this run id is ckpts/../outside/evil.json
    attacker.send(encodeControl({ type: 'hello', v, workerId: 'mallory', ringAddress: 'ws://127.0.0.1:9', configHash: null, host: 'evil', pid: 1, held: { runId: '/../../outside/evil', generation: 3, step: 4, weightsHash: 'ab'.repeat(8) } }));
    await expect.poll(() => coord.stderr, { timeout: 10_000 }).toMatch(/a worker sent a bad message, connection closed: .*run id/);
    attacker.close();
    const worker = startRingtrain(['worker', '--coordinator', address], { RINGTRAIN_TOKEN: 't' });
    expect(await coord.exited, coord.stderr).toBe(0);
    expect(await worker.exited).toBe(0);
    expect(coord.stderr).not.toMatch(/re-adopting run/);
    expect(readFileSync(sibling, 'utf8')).toBe('not the journal');
    expect(readdirSync(join(base, 'outside'))).toEqual(['evil.json']);
  }, 30_000);

  it('a tokenless (--insecure) coordinator cannot be taken over: forged ready, progress and done are refused, and real workers finish', async () => {
    const coord = startRingtrain(['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '2', '--epochs', '1', '--max-steps', '30', '--insecure', '--json']);
    await expect.poll(() => coord.lines.some((l) => String(l.msg).startsWith('coordinator listening')), { timeout: 20_000 }).toBe(true);
    const address = String(coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))!.address);
    const attacker = new WebSocket(address);
    const said: string[] = [];
    attacker.on('message', (d: Buffer) => said.push(decodeControl(d).type));
    await new Promise((r) => attacker.once('open', r));
    const hash = 'ab'.repeat(32);
    attacker.send(encodeControl({ type: 'hello', v, workerId: 'mallory', ringAddress: 'ws://127.0.0.1:9', configHash: null, host: 'evil', pid: 1 }));
    attacker.send(encodeControl({ type: 'ready', v, generation: 1, rank: 0, weightsHash: hash, step: 0, backend: 'x', totalSteps: 1, parameters: 1 }));
    attacker.send(encodeControl({ type: 'progress', v, generation: 1, rank: 9999, epoch: 0, step: 1, loss: 1, samples: 1, correct: 1, steps: 1, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, lr: 0.1, skipped: 0 }));
    attacker.send(encodeControl({ type: 'done', v, generation: 1, rank: 0, steps: 1, weightsHash: hash, replicaChecks: 0 }));
    await expect.poll(() => coord.stderr.match(/message refused/g)?.length ?? 0, { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
    attacker.close();
    // The attacker took one of the two places, and left it: two genuine workers fill the ring and finish.
    const workers = [startRingtrain(['worker', '--coordinator', address]), startRingtrain(['worker', '--coordinator', address])];
    expect(await coord.exited, coord.stderr).toBe(0);
    for (const w of workers) expect(await w.exited).toBe(0);
    expect(JSON.parse(coord.stdout).steps).toBe(30);
    expect(coord.stderr).toMatch(/ready from rank .* while gathering|ready from .*not in the ring|naming rank/);
  }, 60_000);
});
