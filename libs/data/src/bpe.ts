import { DataError } from './errors.js';

/**
 * Byte-level BPE (GPT-2's scheme): a text is UTF-8 bytes, split into words by GPT-2's pattern,
 * and within a word the learned merges join adjacent tokens in the order they were learned. Ids
 * 0–255 are the bytes; id 256 + m is merge m, which joins tokens `merges[2m]` and `merges[2m + 1]`.
 * Any text has a tokenization (there is no unknown token), and decoding gives its bytes back.
 *
 * Written here rather than taken from a library: the one maintained JavaScript binding of a BPE
 * trainer (Hugging Face's `tokenizers`) takes no vocabulary size from Node and ships 64 MB of
 * binaries; this is 200 lines, integer-only, so every worker on every machine learns the same
 * merges from the same text.
 */

/** GPT-2's pre-tokenizer: contractions, letters, digits, other symbols (each with one leading space), and runs of spaces. */
const WORDS = /'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** The vocabulary a byte-level BPE may ask for: the 256 bytes and at least one merge, ids that fit 16 bits. */
export const BPE_LIMITS = { minVocab: 257, maxVocab: 1 << 16 } as const;

const pairKey = (a: number, b: number): number => a * 65536 + b;

/**
 * Learns merges from `text` until the vocabulary holds `vocabSize` tokens, or no pair of adjacent
 * tokens occurs twice. Each step merges the most frequent pair (ties: the lower ids), counting
 * pairs within words only. Pair counts are updated in the words a merge touches, and the most
 * frequent pair is found through a heap whose stale entries are skipped, so a megabyte of text
 * learns thousands of merges in about a second.
 */
export function learnBpe(text: string, vocabSize: number): Uint16Array {
  if (!Number.isInteger(vocabSize) || vocabSize < BPE_LIMITS.minVocab || vocabSize > BPE_LIMITS.maxVocab) {
    throw new DataError('ERR_DATA_CONFIG', `a byte-level BPE vocabulary of ${vocabSize}: it must be ${BPE_LIMITS.minVocab} (the 256 bytes and a merge) to ${BPE_LIMITS.maxVocab}`);
  }
  const freq = new Map<string, number>();
  for (const [w] of text.matchAll(WORDS)) freq.set(w, (freq.get(w) ?? 0) + 1);
  const encoder = new TextEncoder();
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [w, n] of freq) {
    words.push(Array.from(encoder.encode(w)));
    counts.push(n);
  }
  const pairs = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  const heap = new PairHeap();
  const add = (word: number[], w: number, n: number, changed: Set<number>): void => {
    for (let i = 0; i + 1 < word.length; i++) {
      const k = pairKey(word[i], word[i + 1]);
      pairs.set(k, (pairs.get(k) ?? 0) + n);
      changed.add(k);
      if (n > 0) {
        let set = where.get(k);
        if (!set) where.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };
  const all = new Set<number>();
  words.forEach((word, w) => add(word, w, counts[w], all));
  for (const k of all) heap.push(pairs.get(k)!, k);

  const merges: number[] = [];
  while (256 + merges.length / 2 < vocabSize) {
    const top = heap.popValid(pairs);
    if (!top || top.count < 2) break;
    const a = Math.floor(top.key / 65536);
    const b = top.key % 65536;
    const id = 256 + merges.length / 2;
    merges.push(a, b);
    const changed = new Set<number>();
    for (const w of where.get(top.key)!) {
      const word = words[w];
      const merged = mergePair(word, a, b, id);
      if (merged.length === word.length) continue; // an index entry the word has outgrown
      add(word, w, -counts[w], changed);
      add(merged, w, counts[w], changed);
      words[w] = merged;
    }
    where.delete(top.key);
    for (const k of changed) if ((pairs.get(k) ?? 0) > 0) heap.push(pairs.get(k)!, k);
  }
  return Uint16Array.from(merges);
}

/** `word` with each non-overlapping occurrence of (a, b), left to right, replaced by `id`. */
function mergePair(word: readonly number[], a: number, b: number, id: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < word.length; i++) {
    if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
      out.push(id);
      i++;
    } else out.push(word[i]);
  }
  return out;
}

/** A max-heap of (count, pair) by count, then the lower pair; entries whose count has changed since are skipped when popped. */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** The most frequent pair whose entry is current, or null when none is left. */
  popValid(current: Map<number, number>): { count: number; key: number } | null {
    while (this.counts.length) {
      const count = this.counts[0];
      const key = this.keys[0];
      this.removeTop();
      if (current.get(key) === count) return { count, key };
    }
    return null;
  }

  private removeTop(): void {
    const lastCount = this.counts.pop()!;
    const lastKey = this.keys.pop()!;
    if (!this.counts.length) return;
    this.counts[0] = lastCount;
    this.keys[0] = lastKey;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < this.counts.length && this.before(l, best)) best = l;
      if (r < this.counts.length && this.before(r, best)) best = r;
      if (best === i) return;
      this.swap(i, best);
      i = best;
    }
  }

  private before(i: number, j: number): boolean {
    return this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j]);
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }
}

/** GPT-2's printable stand-in for each byte (so that a token's bytes read as a string, a space as "Ġ"). */
const BYTE_SYMBOLS: string[] = (() => {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
})();

/** A byte-level BPE tokenizer from its merges (as `learnBpe` gives them, or as a job config records them). */
export class BpeTokenizer {
  /** Each token's bytes. */
  readonly tokens: Uint8Array[];
  private readonly ranks = new Map<number, number>();
  private readonly cache = new Map<string, number[]>();
  private readonly encoder = new TextEncoder();

  constructor(merges: ArrayLike<number>) {
    if (merges.length % 2 !== 0) throw new DataError('ERR_DATA_CONFIG', `BPE merges come in pairs; got ${merges.length} ids`);
    const size = 256 + merges.length / 2;
    if (size > BPE_LIMITS.maxVocab) throw new DataError('ERR_DATA_CONFIG', `${merges.length / 2} BPE merges make a vocabulary of ${size}, more than ${BPE_LIMITS.maxVocab}`);
    this.tokens = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));
    for (let m = 0; m < merges.length / 2; m++) {
      const [a, b] = [merges[2 * m], merges[2 * m + 1]];
      const id = 256 + m;
      // A merge joins tokens made before it: anything else is a corrupt or hostile record.
      if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < 0 || a >= id || b >= id) throw new DataError('ERR_DATA_CONFIG', `BPE merge ${m} joins tokens ${a} and ${b}; a merge joins tokens made before it (ids below ${id})`);
      if (this.ranks.has(pairKey(a, b))) throw new DataError('ERR_DATA_CONFIG', `BPE merge ${m} joins tokens ${a} and ${b}, as an earlier merge did`);
      this.ranks.set(pairKey(a, b), m);
      const bytes = new Uint8Array(this.tokens[a].length + this.tokens[b].length);
      bytes.set(this.tokens[a]);
      bytes.set(this.tokens[b], this.tokens[a].length);
      this.tokens.push(bytes);
    }
  }

  get size(): number {
    return this.tokens.length;
  }

  /** Each token as GPT-2 writes it in a vocabulary ("Ġthe" for " the"): readable, and one string per token. */
  symbols(): string[] {
    return this.tokens.map((t) => Array.from(t, (b) => BYTE_SYMBOLS[b]).join(''));
  }

  encode(text: string): Uint16Array {
    const out: number[] = [];
    for (const [w] of text.matchAll(WORDS)) {
      let ids = this.cache.get(w);
      if (!ids) {
        ids = this.encodeWord(w);
        if (this.cache.size < 1 << 18) this.cache.set(w, ids);
      }
      for (const id of ids) out.push(id);
    }
    return Uint16Array.from(out);
  }

  /** A word's bytes, merged pair by pair, the earliest-learned pair first, until no learned pair is left. */
  private encodeWord(word: string): number[] {
    let ids = Array.from(this.encoder.encode(word));
    for (;;) {
      let best = -1;
      let rank = Infinity;
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = this.ranks.get(pairKey(ids[i], ids[i + 1]));
        if (r !== undefined && r < rank) [rank, best] = [r, i];
      }
      if (best < 0) return ids;
      ids = mergePair(ids, ids[best], ids[best + 1], 256 + rank);
    }
  }

  /** The bytes of a run of tokens. */
  bytes(ids: ArrayLike<number>): Uint8Array {
    let n = 0;
    for (let i = 0; i < ids.length; i++) n += this.tokens[ids[i]].length;
    const out = new Uint8Array(n);
    for (let i = 0, at = 0; i < ids.length; i++) {
      out.set(this.tokens[ids[i]], at);
      at += this.tokens[ids[i]].length;
    }
    return out;
  }
}
