import { isDeepStrictEqual } from 'node:util';
import type { EntityManager, EntityMetadata } from '@mikro-orm/core';
import type { SessionRow } from './types.js';
import { embeddedIn } from './entity.js';
import type { EmbeddedFeature } from './features/feature.js';

/**
 * What a request read of its session: what a concurrent writer may not have
 * changed for this request's own write to stand.  A key read and changed
 * elsewhere meanwhile means this request decided on a stale value.
 */
export class SessionReads {
  /** Every key counts as read: keys(), entries(), size, spread, clear(). */
  #all = false;
  #keys: Set<string> | undefined;
  #queues: Set<string> | undefined;
  #appended: Map<string, unknown[]> | undefined;

  key(key: string): void {
    if (!this.#all) (this.#keys ??= new Set()).add(key);
  }

  all(): void {
    this.#all = true;
  }

  /** popFlash() or peekFlash() of the queue. */
  queue(queue: string): void {
    (this.#queues ??= new Set()).add(queue);
  }

  /** A flash() message: appended to whatever the queue holds by then. */
  appended(queue: string, message: unknown): void {
    this.#appended ??= new Map();
    const messages = this.#appended.get(queue);
    if (messages) messages.push(message);
    else this.#appended.set(queue, [message]);
  }

  hasRead(key: string): boolean {
    return this.#all || (this.#keys?.has(key) ?? false);
  }

  hasReadQueue(queue: string): boolean {
    return this.#queues?.has(queue) ?? false;
  }

  appendedTo(queue: string): unknown[] {
    return this.#appended?.get(queue) ?? [];
  }
}

/** Where a concurrent writer's row comes from, and the rules of merging. */
export interface MergeSource {
  readonly em: EntityManager;
  readonly meta: EntityMetadata<SessionRow>;
  readonly features: readonly EmbeddedFeature[];
  readonly reads: SessionReads;
  /** The row as the database holds it now, unmanaged; null when it is gone. */
  load(): Promise<SessionRow | null>;
}

type Snapshot = Record<string, unknown>;

/**
 * After the version check found that another request wrote the session
 * first: replays this request's changes onto the row as that request left it,
 * key by key (data), queue by queue (flash) and column by column (features),
 * so that parallel requests that changed different things both stand.  Returns
 * false, changing nothing, when the other writer changed something this
 * request read or changed differently: the request then fails with 409, as
 * before.  On success the row holds the merge, and MikroORM's unit of work
 * takes the other writer's row as the loaded state (its version included),
 * so the next write sends this request's changes against it.
 */
export async function mergeConcurrentWrite(row: SessionRow, source: MergeSource): Promise<boolean> {
  const { em, meta, reads } = source;
  const uow = em.getUnitOfWork();
  const original = uow.getOriginalEntityData(row) as Snapshot | undefined;
  if (!original) return false;
  const fresh = await source.load();
  if (!fresh) return false; // deleted meanwhile (logged out, revoked): nothing to merge into
  const comparator = em.getComparator();
  const theirs = comparator.prepareEntity(fresh) as Snapshot;
  const ours = comparator.prepareEntity(row) as Snapshot;

  const data = mergeData(json(original.data), json(ours.data), json(theirs.data), row.data, reads);
  if (!data) return false;
  const flash = mergeFlash(json(original.flash), json(ours.flash), json(theirs.flash), reads);
  if (!flash) return false;
  const columns = mergeColumns(original, ours, theirs, fresh, row, source);
  if (!columns) return false;

  row.data = data;
  row.flash = flash as SessionRow['flash'];
  for (const [property, field, value] of columns) embeddedIn(row, property)[field] = value;
  row.version = fresh.version;
  uow.register(row, theirs as any, { refresh: true });
  return true;
}

/** A JSON column of a snapshot: the text some platforms keep, or the value. */
function json(value: unknown): Record<string, unknown> {
  return (typeof value === 'string' ? JSON.parse(value) : (value ?? {})) as Record<string, unknown>;
}

function mergeData(
  original: Snapshot,
  ours: Snapshot,
  theirs: Snapshot,
  live: Record<string, unknown>,
  reads: SessionReads,
): Record<string, unknown> | undefined {
  const merged: Record<string, unknown> = {};
  for (const key of new Set([...Object.keys(original), ...Object.keys(ours), ...Object.keys(theirs)])) {
    const changedHere = !isDeepStrictEqual(ours[key], original[key]);
    const changedThere = !isDeepStrictEqual(theirs[key], original[key]);
    if (changedThere && (reads.hasRead(key) || (changedHere && !isDeepStrictEqual(ours[key], theirs[key]))))
      return undefined;
    // This request's own value object (not its JSON copy): a route holding it sees what is written.
    const value = changedHere ? live[key] : theirs[key];
    if (value !== undefined)
      Object.defineProperty(merged, key, { value, writable: true, enumerable: true, configurable: true });
  }
  return merged;
}

function mergeFlash(
  original: Snapshot,
  ours: Snapshot,
  theirs: Snapshot,
  reads: SessionReads,
): Record<string, unknown[]> | undefined {
  const merged: Record<string, unknown[]> = {};
  for (const queue of new Set([...Object.keys(original), ...Object.keys(ours), ...Object.keys(theirs)])) {
    const changedThere = !isDeepStrictEqual(theirs[queue], original[queue]);
    let messages: unknown;
    if (reads.hasReadQueue(queue)) {
      // Popped or peeked here: only if nobody else touched the queue meanwhile.
      if (changedThere) return undefined;
      messages = ours[queue];
    } else {
      // Only appended to here (or untouched): this request's messages go after whatever the queue holds now.
      const appended = reads.appendedTo(queue);
      messages = appended.length ? [...((theirs[queue] as unknown[] | undefined) ?? []), ...appended] : theirs[queue];
    }
    if (messages !== undefined)
      Object.defineProperty(merged, queue, { value: messages, writable: true, enumerable: true, configurable: true });
  }
  return merged;
}

/**
 * The feature columns: this request's value where only it changed one, the
 * other writer's where only that one did; both changed it to different
 * values: the feature's merge rule (the later idle expiry wins), or a
 * conflict.  The app's own columns and relations are never merged: changed
 * there, they are a conflict.
 */
function mergeColumns(
  original: Snapshot,
  ours: Snapshot,
  theirs: Snapshot,
  fresh: SessionRow,
  row: SessionRow,
  source: MergeSource,
): [string, string, unknown][] | undefined {
  const updates: [string, string, unknown][] = [];
  for (const [key, prop] of Object.entries(source.meta.properties)) {
    if (BASE_COLUMNS.has(key) || prop.kind === 'embedded') continue;
    const changedThere = !isDeepStrictEqual(theirs[key], original[key]);
    if (!changedThere) continue;
    if (!prop.embedded || prop.kind !== 'scalar') return undefined;
    const [property, field] = prop.embedded;
    const theirValue = embeddedIn(fresh, property)?.[field];
    if (isDeepStrictEqual(ours[key], original[key])) {
      updates.push([property, field, theirValue]);
      continue;
    }
    if (isDeepStrictEqual(ours[key], theirs[key])) continue;
    const rule = source.features.find((embedded) => embedded.property === property)?.feature.merge?.[field];
    if (!rule) return undefined;
    updates.push([property, field, rule(embeddedIn(row, property)[field], theirValue)]);
  }
  return updates;
}

/** Written by every request, or merged by their own rules. */
const BASE_COLUMNS = new Set(['id', 'version', 'data', 'flash', 'created']);
