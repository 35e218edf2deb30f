import { Command } from 'commander';
import { parseDataFlag, textTokenizer } from './job-flags.js';
import { errorWithCode } from './cli-error.js';

/** `ringtrain data pack <source> <dir>`: any dataset as fixed-size binary shards with an index. */
export function dataCommand(): Command {
  const data = new Command('data').description('prepare datasets');
  data
    .command('pack')
    .description('write a dataset (mnist-small, mnist, idx:<folder>, csv:<file>, images:<folder>) as binary shards with an index, for --data packed:<dir>: training then reads the rows it needs from disk instead of holding the set in memory; a text (text, text:<file>) is tokenized once (a BPE learned once) and its tokens written, for a language model')
    .argument('<source>', 'mnist-small, mnist, idx:<folder>, csv:<file>, images:<folder>, text (the embedded English corpus) or text:<file>')
    .argument('<dir>', 'the folder to write (index.json, shards or token files)')
    .option('--tokenizer <kind>', 'text: characters (the default) or bpe:<vocabulary size>', textTokenizer)
    .action(async (source: string, dir: string, flags: { tokenizer?: ReturnType<typeof textTokenizer> }) => {
      const { loadDataset, tokenizeTextFile, embeddedCorpusPath, writePacked, writeTextPack } = await import('@ringtrain/data');
      const config = parseDataFlag(source) as { source: string; file?: string };
      const t0 = performance.now();
      const seconds = (): string => ((performance.now() - t0) / 1000).toFixed(2);
      if (config.source === 'text') {
        const tokenizer = flags.tokenizer ?? { type: 'characters' as const };
        const tokens = tokenizeTextFile(config.file ?? embeddedCorpusPath(), { tokenizer });
        const index = writeTextPack(dir, tokens, source, tokenizer);
        const kind = index.tokenizer.type === 'bpe' ? `byte-level BPE of ${index.classNames.length} tokens (${index.tokenizer.charsPerToken.toFixed(2)} characters per token)` : `${index.classNames.length} characters`;
        process.stdout.write(`${dir}: ${index.train.tokens} training and ${index.val.tokens} validation tokens, ${kind}, ${seconds()} s; train with --model gpt --data packed:${dir}\n`);
        return;
      }
      if (flags.tokenizer) throw errorWithCode('ERR_ARGUMENT', `--tokenizer is for text, not ${config.source}`);
      // As stored: bytes stay bytes; a CSV is packed without the rescaling training would apply.
      const split = loadDataset({ ...config, normalize: 'none' });
      const index = writePacked(dir, split, source);
      const shards = index.train.shards.length + index.test.shards.length;
      const bytes = [...index.train.shards, ...index.test.shards].reduce((n, s) => n + s.bytes, 0);
      process.stdout.write(`${dir}: ${index.train.size} train and ${index.test.size} test samples of ${index.features} ${index.dtype} values in ${shards} shards (${(bytes / 1e6).toFixed(1)} MB), ${seconds()} s; train with --data packed:${dir}\n`);
    });
  return data;
}
