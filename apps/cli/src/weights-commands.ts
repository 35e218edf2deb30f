import { Command, InvalidArgumentError, Option } from 'commander';
import { nonNegativeInt, positiveInt } from './job-flags.js';

const nonNegativeNumber = (v: string): number => {
  const n = Number(v);
  if (!(n >= 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number ≥ 0, got "${v}"`);
  return n;
};

// The weights commands' definitions; what they do is in weights-actions.ts, loaded when one runs.

export function inspectCommand(): Command {
  return new Command('inspect')
    .description("show a model file: tensors, parameters per block, and at FP32/FP16/INT8/INT4 the parameters' size beside the model's quality (val loss and bits/char for a language model, test accuracy otherwise), step, config")
    .argument('<file>', 'a checkpoint, or a weights file (--save-final, export) at any precision')
    .option('--data <source>', "measure the quality on this test set instead of the file's job's")
    .option('--json', 'print it as JSON')
    .action(async (path: string, flags: { json?: boolean; data?: string }) => (await import('./weights-actions.js')).inspect(path, flags));
}

export function exportCommand(): Command {
  return new Command('export')
    .description("write the weights only, optionally quantized, with all it takes to use them (model, classes, scaling, tokenizer), and report the model's quality before and after")
    .argument('<file>', 'a checkpoint, or a weights file')
    .requiredOption('-o, --output <file>', 'where to write')
    .addOption(new Option('--format <format>', 'file format (default: by the output\'s extension, .json, .onnx, else safetensors); onnx: a standard ONNX model (float32) for onnxruntime').choices(['safetensors', 'json', 'onnx']))
    .addOption(new Option('--quantize <precision>', 'weight precision').choices(['fp16', 'int8', 'int4']))
    .option('--data <source>', 'evaluate on this test set instead of the checkpoint config\'s')
    .action(async (path: string, flags: { output: string; format?: 'safetensors' | 'json' | 'onnx'; quantize?: 'fp16' | 'int8' | 'int4'; data?: string }) => (await import('./weights-actions.js')).exportWeights(path, flags));
}

export function evaluateCommand(): Command {
  return new Command('evaluate')
    .description("a model's test loss and accuracy; a language model's val loss, bits per character and perplexity")
    .argument('<file>', 'a checkpoint, or a weights file at any precision')
    .option('--data <source>', "mnist-small, mnist, idx:<folder>, csv:<file>, images:<folder>, packed:<folder> or text:<file> (default: the file's job's test set)")
    .action(async (path: string, flags: { data?: string }) => (await import('./weights-actions.js')).evaluateCheckpoint(path, flags));
}

export function predictCommand(): Command {
  return new Command('predict')
    .description('predict the class of each input row (CSV of features, or an IDX file of images); by name when the training data named the classes')
    .argument('<file>', 'a checkpoint, or a weights file at any precision')
    .requiredOption('--input <file>', 'CSV rows of features (no label column), an IDX images file, a PNG or JPEG image, or a folder of them')
    .action(async (path: string, flags: { input: string }) => (await import('./weights-actions.js')).predict(path, flags));
}

export function generateCommand(): Command {
  return new Command('generate')
    .description('continue a prompt with a language model (a GPT trained on text)')
    .argument('<file>', "a GPT's checkpoint, or its weights file at any precision")
    .option('--prompt <text>', 'the text to continue (characters of the model\'s vocabulary)', 'The ')
    .option('--tokens <n>', 'characters to generate', positiveInt, 300)
    .option('--temperature <t>', '0: the most likely character each time; higher: more varied (at most 100)', nonNegativeNumber, 0.8)
    .option('--top-k <k>', 'sample among the k most likely characters only (default: all)', positiveInt)
    .option('--seed <n>', 'seeds the sampling: the same seed gives the same text', nonNegativeInt, 1)
    .action(async (path: string, flags: { prompt: string; tokens: number; temperature: number; topK?: number; seed: number }) => (await import('./weights-actions.js')).generate(path, flags));
}
