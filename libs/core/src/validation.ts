import type { z } from 'zod';

/** The field names and the kinds (values of `type`, `source`, …) a schema takes: what a typo is compared with. */
export interface SchemaVocabulary {
  keys: Set<string>;
  /** Per field that holds a choice of kinds (`layers.type`, `optimizer.type`, `dataset.source`), the kinds it takes. */
  kinds: Map<string, Set<string>>;
}

interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  options?: z.ZodType[];
  discriminator?: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  element?: z.ZodType;
  valueType?: z.ZodType;
  getter?: () => z.ZodType;
  values?: unknown[];
  entries?: Record<string, unknown>;
}

const defOf = (schema: z.ZodType): Def => (schema as unknown as { _zod: { def: Def } })._zod.def;

/** Every field name and discriminator value anywhere in `schema` (walked once; lazy parts included). */
export function schemaVocabulary(schema: z.ZodType): SchemaVocabulary {
  const vocabulary: SchemaVocabulary = { keys: new Set(), kinds: new Map() };
  const seen = new Set<z.ZodType>();
  // `field`: the name of the field the schema sits in (a choice of kinds is told apart by it).
  const walk = (s: z.ZodType | undefined, field: string): void => {
    if (!s || seen.has(s)) return;
    seen.add(s);
    const def = defOf(s);
    for (const [key, value] of Object.entries(def.shape ?? {})) {
      vocabulary.keys.add(key);
      walk(value, key);
    }
    for (const option of def.options ?? []) {
      seen.delete(option); // an option may sit in two fields (a layer at the top and in a block)
      walk(option, field);
      const tag = def.discriminator && defOf(option).shape?.[def.discriminator];
      if (!tag || !def.discriminator) continue;
      const name = kindsField(field, def.discriminator);
      const kinds = vocabulary.kinds.get(name) ?? new Set<string>();
      // A literal's values, or an enum's entries (one option for several kinds: adam and adamw).
      const tagDef = defOf(tag);
      for (const v of [...(tagDef.values ?? []), ...Object.values(tagDef.entries ?? {})]) if (typeof v === 'string') kinds.add(v);
      vocabulary.kinds.set(name, kinds);
    }
    for (const inner of [def.innerType, def.in, def.out, def.element, def.valueType]) walk(inner, field);
    if (def.type === 'lazy' && def.getter) walk(def.getter(), field);
  };
  walk(schema, '');
  return vocabulary;
}

const kindsField = (field: string, discriminator: string): string => (field ? `${field}.${discriminator}` : discriminator);

/** The known word a typo most likely meant: the same but for case, or within a few edits. */
export function closest(word: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 4)) + 1;
  for (const k of known) {
    if (k.toLowerCase() === word.toLowerCase()) return k;
    const d = editDistance(word.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

const didYouMean = (word: string, known: Iterable<string> | undefined): string => {
  const guess = known && closest(word, known);
  return guess ? ` (did you mean "${guess}"?)` : '';
};

/**
 * One line per problem, each naming the path and the value: `layers.2.units = -3: Too small: …`.
 * With the schema's vocabulary, an unknown field or kind gets the closest known one ("did you
 * mean") and an unknown kind the list of those there are.
 */
export function describeIssues(error: z.ZodError, vocabulary?: SchemaVocabulary): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.length ? issue.path.join('.') : '(root)';
      if (issue.code === 'unrecognized_keys') {
        return `${path}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"${didYouMean(k, vocabulary?.keys)}`).join(', ')}`;
      }
      const discriminator = (issue as { discriminator?: string }).discriminator;
      if (issue.code === 'invalid_union' && discriminator) {
        const given = (issue as { input?: Record<string, unknown> }).input?.[discriminator];
        // The field the choice sits in: the path's last name before the discriminator (not an index).
        const field = [...issue.path.slice(0, -1)].reverse().find((p) => typeof p === 'string') as string | undefined;
        const kinds = vocabulary?.kinds.get(kindsField(field ?? '', discriminator));
        const list = kinds ? `; one of: ${[...kinds].join(', ')}` : '';
        return `${path}: unknown ${discriminator} ${JSON.stringify(given)}${typeof given === 'string' ? didYouMean(given, kinds) : ''}${list}`;
      }
      const input = 'input' in issue && issue.input !== undefined ? JSON.stringify(issue.input) : undefined;
      const got = input === undefined ? '' : ` = ${input.length > 200 ? `${input.slice(0, 200)}…` : input}`;
      return `${path}${got}: ${issue.message}`;
    })
    .join('; ');
}
