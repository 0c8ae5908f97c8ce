import { SessionDataError } from './errors.js';

/**
 * How deep a value may nest (objects and arrays; `{}` is 1, `[[]]` 2).
 * MariaDB refuses JSON nested deeper than 31 levels, and the flash column
 * wraps a message in two more ({ queue: [message] }).
 */
export const MAX_DEPTH = 29;

/**
 * Text every supported database refuses in JSON: PostgreSQL's jsonb refuses
 * U+0000, PostgreSQL and MariaDB refuse lone surrogates (half of a UTF-16
 * pair, which no UTF-8 text can hold).
 */
const REFUSED_TEXT = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const RULES =
  'session values are stored as JSON (null, booleans, finite numbers, strings, arrays, plain objects and objects ' +
  `with a toJSON() method, nested at most ${MAX_DEPTH} levels, with no U+0000 or lone surrogate in any string or key)`;

/**
 * Session values are stored as `JSON.stringify` stores them, as in every Node
 * session store: `undefined` members of objects are dropped and `toJSON()` is
 * honoured (a Date is stored as its ISO string and comes back as one).  What
 * JSON would silently corrupt or cannot hold, or a database would refuse, is
 * refused here, where the value is set, rather than failing or changing at
 * commit: BigInt, cycles, Map, Set and other class instances without
 * toJSON(), NaN and ±Infinity, functions and symbols, `undefined` inside an
 * array (JSON turns it into null), text no database takes, and nesting
 * deeper than MAX_DEPTH.  The walk is iterative: no value overflows the stack.
 */
export function assertStorable(value: unknown, where: string): void {
  const problem = findProblem(value, 'the value');
  if (problem) throw new SessionDataError(`${where}: cannot store ${problem}; ${RULES}`);
}

/** A key (a data key, a flash queue) must be text every database takes. */
export function assertStorableKey(key: string, where: string): void {
  if (REFUSED_TEXT.test(key))
    throw new SessionDataError(
      `${where}: cannot store the key ${JSON.stringify(key)} (${describeText(key)}); ${RULES}`,
    );
}

/**
 * At commit, for what routes changed in place after set() (an object got
 * through get() and mutated): the same rules over the whole data and flash,
 * so the commit fails as SessionDataError, writing nothing, rather than with
 * a TypeError or a driver error.
 */
export function assertStorableColumns(data: Record<string, unknown>, flash: Record<string, unknown[]>): void {
  for (const [key, value] of Object.entries(data)) {
    assertStorableKey(key, 'the session data');
    assertStorable(value, `ctx.session.${key}, changed in place after it was set,`);
  }
  for (const [queue, messages] of Object.entries(flash)) {
    assertStorableKey(queue, 'the flash queues');
    for (const message of messages)
      assertStorable(message, `a flash message of queue ${JSON.stringify(queue)}, changed in place,`);
  }
}

interface Visit {
  value: unknown;
  path: string;
  /** Objects and arrays this value sits in. */
  depth: number;
}

/** The first thing JSON or a database would not keep as it is, described with its path; undefined if none. */
function findProblem(root: unknown, rootPath: string): string | undefined {
  // Depth-first with an explicit stack; an object stays in `ancestors` until the marker after its members pops.
  const ancestors = new Set<object>();
  const stack: (Visit | { leave: object })[] = [{ value: root, path: rootPath, depth: 0 }];
  while (stack.length) {
    const visit = stack.pop()!;
    if ('leave' in visit) {
      ancestors.delete(visit.leave);
      continue;
    }
    const { value, path, depth } = visit;
    switch (typeof value) {
      case 'string':
        if (REFUSED_TEXT.test(value)) return `${path} (${describeText(value)})`;
        continue;
      case 'boolean':
        continue;
      case 'number':
        if (!Number.isFinite(value)) return `${path} ${value} (JSON would store null)`;
        continue;
      case 'object':
        break;
      default:
        return `${path} (a ${typeof value})`;
    }
    if (value === null) continue;
    if (ancestors.has(value)) return `${path} (a circular reference)`;
    ancestors.add(value);
    stack.push({ leave: value });
    // JSON.stringify stores what toJSON() returns (a Date's ISO string): check that instead.
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') {
      stack.push({ value: toJSON.call(value, ''), path: `${path}.toJSON()`, depth });
      continue;
    }
    const isArray = Array.isArray(value);
    const proto = Object.getPrototypeOf(value);
    if (!isArray && proto !== Object.prototype && proto !== null) {
      const name = value.constructor?.name ?? 'a class';
      return (
        `${path} (an instance of ${name}, which JSON would store as a plain object or lose; convert it first, ` +
        `e.g. a Map with Object.fromEntries())`
      );
    }
    if (depth >= MAX_DEPTH) return `${path} (nested deeper than ${MAX_DEPTH} levels)`;
    const members = Object.entries(value);
    // Pushed in reverse, so the first member is checked first and named in the message.
    for (let i = members.length - 1; i >= 0; i--) {
      const [key, item] = members[i];
      if (!isArray && REFUSED_TEXT.test(key)) return `${path} (the key ${JSON.stringify(key)}: ${describeText(key)})`;
      // JSON drops an undefined member of an object, as every session store does; in an array it would become null.
      if (item === undefined) {
        if (isArray) return `${path}[${key}] (undefined in an array, which JSON would store as null)`;
        continue;
      }
      stack.push({ value: item, path: isArray ? `${path}[${key}]` : `${path}.${key}`, depth: depth + 1 });
    }
  }
  return undefined;
}

function describeText(text: string): string {
  return text.includes('\u0000')
    ? 'a U+0000 character, which PostgreSQL refuses'
    : 'a lone UTF-16 surrogate, which PostgreSQL and MariaDB refuse';
}

/** Bytes the data and flash columns take as JSON (UTF-8). */
export function storedSize(data: unknown, flash: unknown): number {
  return Buffer.byteLength(JSON.stringify(data)) + Buffer.byteLength(JSON.stringify(flash));
}
