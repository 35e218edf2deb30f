import { describe, expect, it } from 'vitest';
import { parseModelSpec } from './model-spec.js';
import { closest } from './validation.js';

describe('what a mistyped spec is told', () => {
  it('an unknown field: the closest known one, and no dump of the input', () => {
    expect(() => parseModelSpec({ inputSize: 4, layers: [{ type: 'dense', unit: 3 }] })).toThrow(/layers\.0: unknown field "unit" \(did you mean "units"\?\)/);
    expect(() => parseModelSpec({ inputSize: 4, layers: [{ type: 'dense', units: 3 }], lose: 'mse' })).toThrow(/\(root\): unknown field "lose" \(did you mean "loss"\?\)$/);
  });

  it('an unknown kind: the closest, then every kind the field takes', () => {
    let message = '';
    try {
      parseModelSpec({ inputSize: 4, layers: [{ type: 'dense', units: 3 }, { type: 'relU' }] });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/layers\.1\.type: unknown type "relU" \(did you mean "relu"\?\); one of: dense, .*relu, leaky_relu, tanh, sigmoid, gelu, dropout/);
    expect(message).not.toMatch(/sgd|cosine/); // another field's kinds are not offered
  });

  it('suggests only what is near: case first, then a few edits for the word length', () => {
    expect(closest('ADAMW', ['sgd', 'adam', 'adamw'])).toBe('adamw');
    expect(closest('optimiser', ['optimizer', 'schedule'])).toBe('optimizer');
    expect(closest('xyz', ['optimizer', 'schedule'])).toBeUndefined();
  });
});
