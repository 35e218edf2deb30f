import { Command } from 'commander';
import { parseDataFlag } from './job-flags.js';

/** `ringtrain data pack <source> <dir>`: any dataset as fixed-size binary shards with an index. */
export function dataCommand(): Command {
  const data = new Command('data').description('prepare datasets');
  data
    .command('pack')
    .description('write a dataset (mnist, idx:<folder>, csv:<file>, images:<folder>) as binary shards with an index, for --data packed:<dir>: training then reads the rows it needs from disk instead of holding the set in memory')
    .argument('<source>', 'mnist, idx:<folder>, csv:<file> or images:<folder>')
    .argument('<dir>', 'the folder to write (index.json, shards, labels)')
    .action(async (source: string, dir: string) => {
      const { loadDataset, writePacked } = await import('@ringtrain/data');
      // As stored: bytes stay bytes; a CSV is packed without the rescaling training would apply.
      const split = loadDataset({ ...(parseDataFlag(source) as object), normalize: 'none' });
      const t0 = performance.now();
      const index = writePacked(dir, split, source);
      const shards = index.train.shards.length + index.test.shards.length;
      const bytes = [...index.train.shards, ...index.test.shards].reduce((n, s) => n + s.bytes, 0);
      process.stdout.write(`${dir}: ${index.train.size} train and ${index.test.size} test samples of ${index.features} ${index.dtype} values in ${shards} shards (${(bytes / 1e6).toFixed(1)} MB), ${((performance.now() - t0) / 1000).toFixed(2)} s; train with --data packed:${dir}\n`);
    });
  return data;
}
