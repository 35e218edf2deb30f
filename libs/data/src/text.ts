import { readFileSync, statSync } from 'node:fs';
import { BpeTokenizer, learnBpe } from './bpe.js';
import type { Dataset, DatasetSplit } from './dataset.js';
import { DataError } from './errors.js';

/** Bounds on a text source, checked before anything is allocated. */
export const TEXT_LIMITS = { maxBytes: 1 << 30, maxVocab: 1 << 16, maxContext: 4096 } as const;

export interface TextOptions {
  /** Tokens a sample sees (the model's context). */
  context: number;
  /** The share of the text, at its end, held out for validation (nanoGPT: 0.1). */
  valFraction?: number;
  /** Windows of the validation split that an evaluation scores: a fixed, evenly spaced sample. */
  evalWindows?: number;
  /**
   * The characters of a tokenizer made before (a trained model's, to fine-tune it), in token order;
   * default: the text's own. A text with a character outside them is refused, naming it.
   */
  vocabulary?: readonly string[];
  /** Characters outside `vocabulary` become new tokens after it (by code point) instead of an error. */
  extendVocabulary?: boolean;
  /** Characters (default), or byte-level BPE: learned from the training split at `vocabSize` tokens, or given by its `merges`. */
  tokenizer?: TextTokenizer;
}

/** What tokenizing a text takes (the windows' options aside). */
export type TokenizeOptions = Omit<TextOptions, 'context' | 'evalWindows'>;

/** How a text becomes tokens, as a job config records it. */
export type TextTokenizer = { type: 'characters' } | { type: 'bpe'; vocabSize: number; merges?: readonly number[] };

/**
 * A character-level corpus (nanoGPT's shakespeare_char): the vocabulary is the file's distinct
 * characters, sorted by code point, and is the split's `classNames` (so checkpoints and weights
 * files record it). A sample is a window of `context` tokens, its labels the next token at each
 * position. The training split (the first 1 − valFraction of the text) is cut into windows that
 * cover it once (an epoch is one pass over the text); the validation split (the rest) is scored on
 * up to `evalWindows` windows spread evenly through it.
 */
export function loadText(path: string, options: TextOptions): DatasetSplit {
  checkContext(options.context, `text ${path}`);
  return textWindows(`text:${path}`, tokenizeTextFile(path, options), options);
}

function checkContext(T: number, what: string): void {
  if (!Number.isInteger(T) || T < 1 || T > TEXT_LIMITS.maxContext) throw new DataError('ERR_DATA_CONFIG', `${what}: a context of ${T} tokens; it must be 1 to ${TEXT_LIMITS.maxContext}`);
}

/** A UTF-8 file as training and validation tokens (the last `valFraction` validates), by its tokenizer. */
export function tokenizeTextFile(path: string, options: TokenizeOptions): TokenizedText {
  const size = fileSize(path);
  if (size > TEXT_LIMITS.maxBytes) throw new DataError('ERR_DATA_TOO_LARGE', `text ${path} has ${size} bytes, more than ${TEXT_LIMITS.maxBytes}`);
  const text = decodeUtf8(readFileSync(path), path);
  const valFraction = options.valFraction ?? 0.1;
  return options.tokenizer?.type === 'bpe' ? tokenizeBpe(text, options, valFraction, path) : tokenizeCharacterSplits(text, options, valFraction, path);
}

/**
 * Tokens as windows of `context`: the training split's cover it once (an epoch is one pass), the
 * validation split's are up to `evalWindows` spread evenly through it.
 */
export function textWindows(name: string, tokens: TokenizedText, options: Pick<TextOptions, 'context' | 'evalWindows'>): DatasetSplit {
  const { train, val, symbols, merges, charsPerToken } = tokens;
  const T = options.context;
  checkContext(T, name);
  const need = T + 1;
  if (train.length < need || val.length < need) {
    throw new DataError('ERR_DATA_FORMAT', `${name}: ${train.length + val.length} ${merges ? 'tokens' : 'characters'} (${train.length} to train, ${val.length} to validate) are too few for windows of ${T} tokens and their next token; give a longer text or a smaller context`);
  }
  const trainStarts = Array.from({ length: Math.floor((train.length - 1) / T) }, (_, i) => i * T);
  const valCount = Math.floor((val.length - 1) / T);
  const evalCount = Math.min(valCount, options.evalWindows ?? 256);
  const valStarts = Array.from({ length: evalCount }, (_, i) => Math.floor((i * valCount) / evalCount) * T);
  return {
    train: windows(`${name}/train`, train, trainStarts, T, symbols),
    test: windows(`${name}/val`, val, valStarts, T, symbols),
    ...(merges ? { merges, charsPerToken } : {}),
  };
}

/** A text's tokens, split, with what reads them back. */
export interface TokenizedText {
  train: Uint16Array;
  val: Uint16Array;
  /** Each token's text (a byte-level BPE token's bytes as GPT-2 writes them). */
  symbols: string[];
  /** A byte-level BPE's merges. */
  merges?: Uint16Array;
  /** Characters per token on the validation text (a BPE's). */
  charsPerToken?: number;
}

function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) if ((s.charCodeAt(i) & 0xfc00) !== 0xdc00) n++; // low surrogates end a character counted already
  return n;
}

/** Characters: the text's own (sorted by code point) or a given vocabulary's; the last `valFraction` of the tokens validate. */
function tokenizeCharacterSplits(text: string, options: TokenizeOptions, valFraction: number, path: string): TokenizedText {
  const { tokens, symbols } = options.vocabulary ? tokenizeWith(text, options.vocabulary, path, options.extendVocabulary ?? false) : tokenizeCharacters(text, path);
  const cut = Math.floor(tokens.length * (1 - valFraction));
  return { train: tokens.subarray(0, cut), val: tokens.subarray(cut), symbols };
}

/**
 * Byte-level BPE: the text is cut at the last `valFraction` of its characters; the merges are the
 * given ones or are learned from the training part alone (the validation text is never seen).
 */
function tokenizeBpe(text: string, options: TokenizeOptions, valFraction: number, path: string): TokenizedText {
  const tokenizer = options.tokenizer as Extract<TextTokenizer, { type: 'bpe' }>;
  if (options.vocabulary || options.extendVocabulary) throw new DataError('ERR_DATA_CONFIG', `text ${path}: a character vocabulary was given with a byte-level BPE tokenizer; BPE reads any text with its merges (leave vocabulary and --extend-vocabulary out)`);
  let cut = Math.floor(text.length * (1 - valFraction));
  if (cut > 0 && cut < text.length && /[\uD800-\uDBFF]/.test(text[cut - 1])) cut++; // not between a surrogate pair's halves
  const trainText = text.slice(0, cut);
  const merges = tokenizer.merges ? Uint16Array.from(tokenizer.merges) : learnBpe(trainText, tokenizer.vocabSize);
  const bpe = new BpeTokenizer(merges);
  const valText = text.slice(cut);
  const val = bpe.encode(valText);
  return { train: bpe.encode(trainText), val, symbols: bpe.symbols(), merges, charsPerToken: val.length ? codePoints(valText) / val.length : 1 };
}

/**
 * The text's code points as token ids, and the characters in id order (sorted by code point).
 * Two passes over the string's char codes and no string per character: an array of 6 M one-letter
 * strings made a heap whose later full collection stalled a worker past its peers' heartbeat
 * deadline (2.7 s).
 */
function tokenizeCharacters(text: string, path: string): { tokens: Uint16Array; symbols: string[] } {
  const codePoints = new Uint32Array(text.length);
  let n = 0;
  const seen = new Set<number>();
  for (let i = 0; i < text.length; i++) {
    const cp = text.codePointAt(i)!;
    if (cp > 0xffff) i++; // the low half of a surrogate pair
    codePoints[n++] = cp;
    seen.add(cp);
  }
  if (seen.size > TEXT_LIMITS.maxVocab) throw new DataError('ERR_DATA_TOO_LARGE', `text ${path} has ${seen.size} distinct characters, more than a vocabulary of ${TEXT_LIMITS.maxVocab}`);
  const sorted = [...seen].sort((a, b) => a - b);
  const index = new Map(sorted.map((cp, id) => [cp, id]));
  const tokens = new Uint16Array(n);
  for (let i = 0; i < n; i++) tokens[i] = index.get(codePoints[i])!;
  return { tokens, symbols: sorted.map((cp) => String.fromCodePoint(cp)) };
}

/**
 * The text's code points as ids of a given vocabulary. A character outside it is an error naming
 * each (up to 10) and its first offset; or, to `extend`, a new token after the vocabulary's.
 */
function tokenizeWith(text: string, vocabulary: readonly string[], path: string, extend: boolean): { tokens: Uint16Array; symbols: string[] } {
  const index = new Map<number, number>();
  vocabulary.forEach((s, id) => {
    const cp = s.codePointAt(0)!;
    if (String.fromCodePoint(cp) !== s || index.has(cp)) throw new DataError('ERR_DATA_CONFIG', `text ${path}: the vocabulary's entry ${id} (${JSON.stringify(s)}) is not one character, or comes twice`);
    index.set(cp, id);
  });
  const tokens = new Uint16Array(text.length);
  const missing = new Map<string, number>();
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const cp = text.codePointAt(i)!;
    const at = i;
    if (cp > 0xffff) i++;
    const id = index.get(cp);
    if (id === undefined) {
      const c = String.fromCodePoint(cp);
      if (!missing.has(c)) missing.set(c, at);
    } else tokens[n++] = id;
  }
  if (missing.size && extend) {
    const added = [...missing.keys()].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    if (vocabulary.length + added.length > TEXT_LIMITS.maxVocab) throw new DataError('ERR_DATA_TOO_LARGE', `text ${path}: a vocabulary of ${vocabulary.length + added.length} characters, more than ${TEXT_LIMITS.maxVocab}`);
    return tokenizeWith(text, [...vocabulary, ...added], path, false);
  }
  if (missing.size) {
    const named = [...missing].slice(0, 10).map(([c, at]) => `${JSON.stringify(c)} (first at character ${at})`).join(', ');
    throw new DataError('ERR_VOCABULARY', `text ${path} has ${missing.size} character${missing.size > 1 ? 's' : ''} outside the model's vocabulary of ${vocabulary.length}: ${named}${missing.size > 10 ? ', …' : ''}; a character model reads only the characters it was trained on (--extend-vocabulary adds them as new tokens)`);
  }
  return { tokens: tokens.subarray(0, n), symbols: [...vocabulary] };
}

function windows(name: string, tokens: Uint16Array, starts: number[], T: number, symbols: string[]): Dataset {
  const x = new Float32Array(starts.length * T);
  const labels = new Int32Array(starts.length * T);
  starts.forEach((s, i) => {
    for (let t = 0; t < T; t++) {
      x[i * T + t] = tokens[s + t];
      labels[i * T + t] = tokens[s + t + 1];
    }
  });
  return { name, size: starts.length, features: T, x, labels, labelWidth: T, classes: symbols.length, targetSize: 0, classNames: symbols };
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch (err) {
    throw new DataError('ERR_DATA_NOT_FOUND', `text ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { cause: err });
  }
}

/** The file as a string; bytes that are not UTF-8 are refused, naming the first one's offset. */
function decodeUtf8(bytes: Uint8Array, path: string): string {
  if (bytes.length === 0) throw new DataError('ERR_DATA_FORMAT', `text ${path} is empty`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    throw new DataError('ERR_DATA_FORMAT', `text ${path} is not UTF-8: byte ${at} (0x${bytes[at]?.toString(16).padStart(2, '0') ?? '??'}) starts no valid character`);
  }
}

/**
 * The offset of the first byte that starts no valid UTF-8 sequence, as a strict decoder sees it
 * (no overlong forms, no surrogates, nothing past U+10FFFF), or the length when all of it is valid.
 * One pass over the bytes: it runs on files of any size.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    // The length of the sequence, and the range its second byte must be in.
    const [n, lo, hi] = b >= 0xc2 && b <= 0xdf ? [2, 0x80, 0xbf] : b === 0xe0 ? [3, 0xa0, 0xbf] : b === 0xed ? [3, 0x80, 0x9f] : b >= 0xe1 && b <= 0xef ? [3, 0x80, 0xbf] : b === 0xf0 ? [4, 0x90, 0xbf] : b === 0xf4 ? [4, 0x80, 0x8f] : b >= 0xf1 && b <= 0xf3 ? [4, 0x80, 0xbf] : [0, 0, 0];
    if (n === 0 || i + n > bytes.length || bytes[i + 1] < lo || bytes[i + 1] > hi) return i;
    for (let k = 2; k < n; k++) if (bytes[i + k] < 0x80 || bytes[i + k] > 0xbf) return i;
    i += n;
  }
  return bytes.length;
}
