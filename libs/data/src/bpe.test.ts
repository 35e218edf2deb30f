import { describe, expect, it } from 'vitest';
import { BpeTokenizer, learnBpe } from './bpe.js';

const WORDS = /'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** BPE the slow way: every step counts every pair of every word again. */
function naiveBpe(text: string, vocabSize: number): number[] {
  const freq = new Map<string, number>();
  for (const [w] of text.matchAll(WORDS)) freq.set(w, (freq.get(w) ?? 0) + 1);
  let words = [...freq].map(([w, n]) => ({ ids: Array.from(new TextEncoder().encode(w)), n }));
  const merges: number[] = [];
  while (256 + merges.length / 2 < vocabSize) {
    const counts = new Map<number, number>();
    for (const { ids, n } of words) for (let i = 0; i + 1 < ids.length; i++) counts.set(ids[i] * 65536 + ids[i + 1], (counts.get(ids[i] * 65536 + ids[i + 1]) ?? 0) + n);
    let [best, top] = [-1, 1];
    for (const [k, c] of counts) if (c > top || (c === top && c >= 2 && k < best)) [best, top] = [k, c];
    if (best < 0) break;
    const [a, b, id] = [Math.floor(best / 65536), best % 65536, 256 + merges.length / 2];
    merges.push(a, b);
    words = words.map(({ ids, n }) => {
      const out: number[] = [];
      for (let i = 0; i < ids.length; i++) if (ids[i] === a && ids[i + 1] === b) out.push(id, ...(i++, [])); else out.push(ids[i]);
      return { ids: out, n };
    });
  }
  return merges;
}

describe('byte-level BPE', () => {
  it('merges the most frequent pair within words first, then the next, until no pair comes twice', () => {
    // "ab" once and " ab" three times: (a, b) 4 times, then (" ", ab) 3 times; then nothing repeats.
    expect(Array.from(learnBpe('ab ab ab ab', 1000))).toEqual([97, 98, 32, 256]);
    // Stops at the vocabulary asked for.
    expect(Array.from(learnBpe('ab ab ab ab', 257))).toEqual([97, 98]);
    // A tie goes to the lower ids: (a, b) before (c, d).
    expect(Array.from(learnBpe('cd ab', 257))).toEqual([]);
    expect(Array.from(learnBpe('cdab cdab', 257))).toEqual([97, 98]);
  });

  it('learns what counting every pair again at every step learns, on random text', () => {
    let seed = 7;
    const next = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const alphabet = ['a', 'b', 'c', 'd', ' ', ' ', 'é', '1', '.', '\n', '🙂'];
    const text = Array.from({ length: 4000 }, () => alphabet[Math.floor(next() * alphabet.length)]).join('');
    const merges = Array.from(learnBpe(text, 400));
    expect(merges.length / 2).toBeGreaterThan(50); // enough merges that later ones build on earlier ones
    expect(merges).toEqual(naiveBpe(text, 400));
  });

  it('encodes by merge order, not left to right, and any text decodes to its bytes again', () => {
    // (b, c) was learned before (a, b): "abc" is a + bc.
    const bpe = new BpeTokenizer([98, 99, 97, 98]);
    expect(Array.from(bpe.encode('abc'))).toEqual([97, 256]);
    expect(Array.from(bpe.encode('abx'))).toEqual([257, 120]);
    const learned = new BpeTokenizer(learnBpe('the cat sat on the mat; the end. '.repeat(50), 300));
    for (const s of ['the cat', 'naïve café 東京 🙂\r\n\ttabs', '\u0000\u007f', "it's they'll", '   many   spaces  ']) {
      expect(new TextDecoder().decode(learned.bytes(learned.encode(s)))).toBe(s);
    }
    expect(learned.encode('the cat').length).toBeLessThan('the cat'.length);
    // GPT-2's readable form of each token: a space is "Ġ".
    expect(learned.symbols()[32]).toBe('Ġ');
    expect(learned.symbols().slice(256)).toContain('Ġthe');
  });

  it('refuses merges that are not a BPE (odd, a token not made yet, a merge twice) and vocabulary sizes out of range', () => {
    expect(() => new BpeTokenizer([97])).toThrow(expect.objectContaining({ code: 'ERR_DATA_CONFIG' }));
    expect(() => new BpeTokenizer([97, 256])).toThrow(/made before it/);
    expect(() => new BpeTokenizer([97, 98, 97, 98])).toThrow(/as an earlier merge did/);
    expect(() => new BpeTokenizer([97, -1])).toThrow(/made before it/);
    for (const v of [256, 65537, 300.5]) expect(() => learnBpe('ab ab', v)).toThrow(expect.objectContaining({ code: 'ERR_DATA_CONFIG' }));
  });
});
