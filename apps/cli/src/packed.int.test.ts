import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = startRingtrain(args);
  const code = await r.exited;
  return { code, stdout: r.stdout, stderr: r.stderr };
}

describe('packed datasets (ringtrain data pack, --data packed:<dir>), real processes and files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-packed-'));
  const pack = join(dir, 'mnist');

  it('train from the pack: bit-identical final weights to the in-memory data, at 1 and 3 workers', async () => {
    const packed = await run(['data', 'pack', 'mnist-small', pack]);
    expect(packed.code, packed.stderr).toBe(0);
    expect(packed.stdout).toMatch(/8000 train and 2000 test samples of 784 uint8 values in 2 shards/);
    for (const workers of ['1', '3']) {
      const fromPack = await run(['launch', '--workers', workers, '--data', `packed:${pack}`, '--epochs', '2', '--json']);
      const inMemory = await run(['launch', '--workers', workers, '--epochs', '2', '--json']);
      expect(fromPack.code, fromPack.stderr).toBe(0);
      expect(inMemory.code, inMemory.stderr).toBe(0);
      const [a, b] = [JSON.parse(fromPack.stdout), JSON.parse(inMemory.stdout)];
      expect(a.steps).toBe(b.steps);
      expect(a.weightsHash).toBe(b.weightsHash);
      expect(a.epochs.at(-1).testAccuracy).toBe(b.epochs.at(-1).testAccuracy);
    }
  }, 180_000);

  it('a corrupt or truncated shard, labels file or index is refused naming the file and the shard', async () => {
    const index = join(pack, 'index.json');
    const shard = join(pack, 'train-00000.bin');
    const good = { index: readFileSync(index), shard: readFileSync(shard), labels: readFileSync(join(pack, 'test-labels.bin')), crc: readFileSync(join(pack, 'train-crc.bin')) };
    const expectRefused = async (pattern: RegExp): Promise<void> => {
      const r = await run(['train', '--data', `packed:${pack}`, '--epochs', '1']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(pattern);
    };
    try {
      writeFileSync(shard, good.shard.subarray(0, good.shard.length - 784));
      await expectRefused(/ERR_DATA_TRUNCATED: .*train-00000\.bin: shard 0 of train has 6271216 bytes, the index says 6272000/);
      const flipped = Buffer.from(good.shard);
      flipped[123_456] ^= 0x10;
      writeFileSync(shard, flipped);
      // Byte 123,456 lies in row 157 (784 bytes a row): found when that row is first read.
      await expectRefused(/ERR_DATA_FORMAT: .*train-00000\.bin: row 157 of shard 0 \(train sample 157\) does not match its CRC-32 \(a corrupt shard\)/);
      writeFileSync(shard, good.shard);
      const labels = Buffer.from(good.labels);
      labels[4] ^= 0x01;
      writeFileSync(join(pack, 'test-labels.bin'), labels);
      await expectRefused(/ERR_DATA_FORMAT: .*test-labels\.bin: SHA-256 does not match the index \(a corrupt labels file\)/);
      writeFileSync(join(pack, 'test-labels.bin'), good.labels);
      writeFileSync(join(pack, 'train-crc.bin'), good.crc.subarray(0, 100));
      await expectRefused(/ERR_DATA_TRUNCATED: .*train-crc\.bin: 100 bytes for 8000 row checksums/);
      writeFileSync(join(pack, 'train-crc.bin'), good.crc);
      writeFileSync(index, good.index.subarray(0, 100));
      await expectRefused(/ERR_DATA_FORMAT: .*index\.json: not a ringtrain pack index/);
      writeFileSync(index, JSON.stringify({ ...JSON.parse(good.index.toString()), features: 785 }));
      await expectRefused(/ERR_DATA_FORMAT: .*index\.json: shard 0 \(train-00000\.bin\) claims 8000 rows in 6272000 bytes, rows are 785 bytes/);
    } finally {
      writeFileSync(index, good.index);
      writeFileSync(shard, good.shard);
      writeFileSync(join(pack, 'test-labels.bin'), good.labels);
      writeFileSync(join(pack, 'train-crc.bin'), good.crc);
    }
    const again = await run(['train', '--data', `packed:${pack}`, '--epochs', '1', '--json']);
    expect(again.code, again.stderr).toBe(0);
  }, 120_000);
});
