import { SessionDataError } from './errors.js';

/**
 * Session values go into a JSON column and come back through JSON.parse, so
 * only JSON values are accepted: anything else would be lost or changed on
 * the way (a Date becomes a string, undefined vanishes, BigInt throws late).
 * Rejecting it at set() points at the line that did it.
 */
export function assertStorable(value: unknown, where: string): void {
  const problem = findProblem(value, new Set());
  if (problem) throw new SessionDataError(`${where}: cannot store ${problem}; session values must be JSON values (null, booleans, finite numbers, strings, arrays and plain objects)`);
}

function findProblem(value: unknown, ancestors: Set<object>, path = 'the value'): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `${path} ${value} (not finite)`;
    case 'object':
      break;
    default:
      return `${path} (a ${typeof value})`;
  }
  if (value === null) return undefined;
  if (ancestors.has(value)) return `${path} (a circular reference)`;
  const proto = Object.getPrototypeOf(value);
  const isArray = Array.isArray(value);
  if (!isArray && proto !== Object.prototype && proto !== null) {
    return `${path} (an instance of ${value.constructor?.name ?? 'a class'}; convert it first, e.g. a Date with toISOString())`;
  }
  ancestors.add(value);
  for (const [key, item] of Object.entries(value)) {
    const problem = findProblem(item, ancestors, isArray ? `${path}[${key}]` : `${path}.${key}`);
    if (problem) return problem;
  }
  ancestors.delete(value);
  return undefined;
}

/** Bytes the data and flash columns take as JSON (UTF-8). */
export function storedSize(data: unknown, flash: unknown): number {
  return Buffer.byteLength(JSON.stringify(data)) + Buffer.byteLength(JSON.stringify(flash));
}
