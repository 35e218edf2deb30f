// Build step: the embedded English corpus as plain text (build/brown.txt), read by `--data text`.
import { writeEmbeddedCorpus } from '../dist/corpus.js';

writeEmbeddedCorpus();
