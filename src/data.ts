import { SessionDataError } from './errors.js';

/**
 * Session values are stored as `JSON.stringify` stores them, as in every Node
 * session store: `undefined` members of objects are dropped and `toJSON()` is
 * honoured (a Date is stored as its ISO string and comes back as one).  What
 * JSON would silently corrupt or cannot hold is refused here, where the value
 * is set, rather than failing or changing at commit: BigInt, cycles, Map, Set
 * and other class instances without toJSON(), NaN and ±Infinity, functions and
 * symbols, and `undefined` inside an array (JSON turns it into null).
 */
export function assertStorable(value: unknown, where: string): void {
  const problem = findProblem(value, new Set(), 'the value');
  if (problem) throw new SessionDataError(`${where}: cannot store ${problem}; session values are stored as JSON (null, booleans, finite numbers, strings, arrays, plain objects and objects with a toJSON() method)`);
}

function findProblem(value: unknown, ancestors: Set<object>, path: string): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `${path} ${value} (JSON would store null)`;
    case 'object':
      break;
    default:
      return `${path} (a ${typeof value})`;
  }
  if (value === null) return undefined;
  if (ancestors.has(value)) return `${path} (a circular reference)`;
  ancestors.add(value);
  const problem = findMemberProblem(value, ancestors, path);
  ancestors.delete(value);
  return problem;
}

function findMemberProblem(value: object, ancestors: Set<object>, path: string): string | undefined {
  // JSON.stringify stores what toJSON() returns (a Date's ISO string): check that instead.
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') return findProblem(toJSON.call(value, ''), ancestors, `${path}.toJSON()`);
  const isArray = Array.isArray(value);
  const proto = Object.getPrototypeOf(value);
  if (!isArray && proto !== Object.prototype && proto !== null) {
    const name = value.constructor?.name ?? 'a class';
    return `${path} (an instance of ${name}, which JSON would store as a plain object or lose; convert it first, e.g. a Map with Object.fromEntries())`;
  }
  for (const [key, item] of Object.entries(value)) {
    // JSON drops an undefined member of an object, as every session store does; in an array it would become null.
    if (item === undefined && !isArray) continue;
    const problem = item === undefined ? `${path}[${key}] (undefined in an array, which JSON would store as null)` : findProblem(item, ancestors, isArray ? `${path}[${key}]` : `${path}.${key}`);
    if (problem) return problem;
  }
  return undefined;
}

/** Bytes the data and flash columns take as JSON (UTF-8). */
export function storedSize(data: unknown, flash: unknown): number {
  return Buffer.byteLength(JSON.stringify(data)) + Buffer.byteLength(JSON.stringify(flash));
}
