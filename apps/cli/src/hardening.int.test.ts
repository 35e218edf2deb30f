import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
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
  const config = { model: spec, dataset: { source: 'mnist' }, optimizer: { type: 'sgd', lr: 0.1 }, batchSize: 64, epochs: 1, seed: 1 };
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
