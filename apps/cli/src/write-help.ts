// Build step: writes the top-level help of the full program to dist/help.txt, which `ringtrain
// --help` prints without loading the engine (main.ts).
import { writeFileSync } from 'node:fs';
import { buildProgram } from './program.js';

writeFileSync(new URL('./help.txt', import.meta.url), buildProgram().helpInformation());
