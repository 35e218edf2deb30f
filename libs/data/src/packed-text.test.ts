import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPacked, writePacked, writeTextPack } from './packed.js';
import { loadText, tokenizeTextFile } from './text.js';
import { gaussianBlobs } from './synthetic.js';
import { splitDataset } from './load-dataset.js';

const dir = mkdtempSync(join(tmpdir(), 'ringtrain-textpack-'));
const textFile = join(dir, 'text.txt');
writeFileSync(textFile, 'the cat sat on the mat, and the dog sat on the log. '.repeat(60));

describe('a packed text', () => {
  for (const tokenizer of [{ type: 'characters' as const }, { type: 'bpe' as const, vocabSize: 300 }]) {
    it(`reads back as the same windows as the text itself (${tokenizer.type})`, () => {
      const pack = join(dir, `pack-${tokenizer.type}`);
      writeTextPack(pack, tokenizeTextFile(textFile, { tokenizer }), 'text', tokenizer);
      const packed = loadPacked(pack, { context: 8 });
      const direct = loadText(textFile, { context: 8, tokenizer });
      for (const which of ['train', 'test'] as const) {
        expect(packed[which].size).toBe(direct[which].size);
        expect(Array.from(packed[which].x)).toEqual(Array.from(direct[which].x));
        expect(Array.from(packed[which].labels!)).toEqual(Array.from(direct[which].labels!));
        expect(packed[which].classNames).toEqual(direct[which].classNames);
      }
      expect(packed.merges && Array.from(packed.merges)).toEqual(direct.merges && Array.from(direct.merges));
      expect(packed.charsPerToken).toBe(direct.charsPerToken);
    });
  }

  it('refuses a corrupt token file, a job whose merges are not the pack\'s, no context, and rows where text was wanted', () => {
    const pack = join(dir, 'pack-check');
    const tokenizer = { type: 'bpe' as const, vocabSize: 300 };
    const { tokenizer: recorded } = writeTextPack(pack, tokenizeTextFile(textFile, { tokenizer }), 'text', tokenizer);
    expect(() => loadPacked(pack)).toThrow(expect.objectContaining({ code: 'ERR_DATA_CONFIG', message: expect.stringMatching(/holds a packed text/) }));
    const merges = (recorded as { merges: number[] }).merges;
    expect(() => loadPacked(pack, { context: 8, tokenizer: { ...tokenizer, merges: [...merges].reverse() } })).toThrow(/not the ones its text was packed with/);
    expect(loadPacked(pack, { context: 8, tokenizer: { ...tokenizer, merges } }).train.size).toBeGreaterThan(0);
    const tokens = join(pack, 'val-tokens.bin');
    const bytes = readFileSync(tokens);
    bytes[10] ^= 1;
    writeFileSync(tokens, bytes);
    expect(() => loadPacked(pack, { context: 8 })).toThrow(expect.objectContaining({ code: 'ERR_DATA_FORMAT', message: expect.stringMatching(/SHA-256 does not match/) }));
    writeFileSync(tokens, bytes.subarray(0, 7));
    expect(() => loadPacked(pack, { context: 8 })).toThrow(expect.objectContaining({ code: 'ERR_DATA_TRUNCATED' }));
    const rows = join(dir, 'rows');
    writePacked(rows, splitDataset(gaussianBlobs({ samples: 50, features: 2, classes: 2, seed: 1 }), 0.2), 'blobs');
    expect(() => loadPacked(rows, { context: 8 })).toThrow(/holds no text/);
  });
});
