import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadText } from './text.js';

const dir = mkdtempSync(join(tmpdir(), 'ringtrain-text-'));
const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('text with a given vocabulary (fine-tuning a trained model)', () => {
  const vocabulary = [' ', 'a', 'b', 'c'];

  it("reads the text with the model's token ids, not its own", () => {
    const split = loadText(file('ab.txt', 'cab '.repeat(20)), { context: 4, vocabulary });
    expect(split.train.classNames).toEqual(vocabulary);
    // "cab " → 3 1 2 0; the labels are the next characters.
    expect(Array.from(split.train.x.subarray(0, 4))).toEqual([3, 1, 2, 0]);
    expect(Array.from(split.train.labels!.subarray(0, 4))).toEqual([1, 2, 0, 3]);
  });

  it('refuses characters outside it, naming each and where it first comes', () => {
    expect(() => loadText(file('new.txt', `${'ab '.repeat(20)}éz${'c'.repeat(40)}`), { context: 4, vocabulary })).toThrow(
      expect.objectContaining({ code: 'ERR_VOCABULARY', message: expect.stringMatching(/has 2 characters outside the model's vocabulary of 4: "é" \(first at character 60\), "z" \(first at character 61\)/) }),
    );
  });

  it('extends it: the new characters become tokens after the old ones, by code point; old ids keep their meaning', () => {
    const split = loadText(file('grow.txt', `${'zé abc '.repeat(20)}`), { context: 4, vocabulary, extendVocabulary: true });
    expect(split.train.classNames).toEqual([...vocabulary, 'z', 'é']);
    expect(Array.from(split.train.x.subarray(0, 4))).toEqual([4, 5, 0, 1]);
  });

  it('refuses a vocabulary whose entries are not single characters, or repeat', () => {
    expect(() => loadText(file('x.txt', 'ab '.repeat(20)), { context: 4, vocabulary: ['a', 'a', 'b'] })).toThrow(/entry 1 \("a"\) is not one character, or comes twice/);
  });
});

describe('text by byte-level BPE', () => {
  it('learns its merges from the training split alone, reads the validation text with them, and gives them back to be recorded', () => {
    // The last tenth is "xyz" words, never seen in training: no merge joins x, y or z.
    const text = `${'the cat sat. '.repeat(90)}${'xyz '.repeat(30)}`;
    const split = loadText(file('bpe.txt', text), { context: 4, tokenizer: { type: 'bpe', vocabSize: 300 } });
    const merges = Array.from(split.merges!);
    expect(merges.length).toBeGreaterThan(0);
    expect(merges.filter((id) => id >= 120 && id <= 122)).toEqual([]);
    expect(split.train.classes).toBe(256 + merges.length / 2);
    expect(split.train.classNames).toHaveLength(split.train.classes);
    // Validation windows are bytes: more tokens per character than the training text's.
    expect(split.charsPerToken).toBeCloseTo(1, 1);
    // Given merges are used as they are: the same tokens.
    const again = loadText(file('bpe.txt', text), { context: 4, tokenizer: { type: 'bpe', vocabSize: 300, merges } });
    expect(Array.from(again.train.x)).toEqual(Array.from(split.train.x));
    expect(Array.from(again.test.labels!)).toEqual(Array.from(split.test.labels!));
  });

  it('refuses a character vocabulary with it', () => {
    expect(() => loadText(file('bpe2.txt', 'ab '.repeat(100)), { context: 4, vocabulary: ['a', 'b', ' '], tokenizer: { type: 'bpe', vocabSize: 300 } })).toThrow(expect.objectContaining({ code: 'ERR_DATA_CONFIG' }));
  });
});
