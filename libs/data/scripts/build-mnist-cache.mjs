// Build step: turn the embedded MNIST JSON into the compact binary cache that workers load.
import { writeMnistCache } from '../dist/mnist.js';

writeMnistCache();
