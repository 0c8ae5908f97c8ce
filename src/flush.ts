import {
  EntitySchema,
  OptimisticLockError,
  wrap,
  type EntityManager,
  type EntityMetadata,
  type EventSubscriber,
  type FlushEventArgs,
  type MikroORM,
  type Transaction,
  type UnitOfWork,
} from '@mikro-orm/core';
import type { SessionRow } from './types.js';
import { recordingCheckouts } from './connection-failures.js';
import { trusted, trustInternals } from './internals.js';
import type { SessionStatements } from './statements.js';

/**
 * The end-of-request write in the default mode (no request-wide transaction).
 *
 * MikroORM wraps every flush in BEGIN/COMMIT and builds each statement with
 * its query builder.  When the session row is the only change of a request,
 * as when a route just stored a value, that flush is one INSERT, UPDATE or
 * DELETE, which the database applies atomically on its own; the transaction
 * adds two round trips and nothing else.  So, from the cheapest to the most
 * general:
 *
 * 1. The fork holds the session row and nothing else (the app loaded no
 *    entity): the row is written with its prepared statement (statements.ts),
 *    its values converted by MikroORM's own snapshot, its columns named as
 *    MikroORM's field mapping names them (columnValues() in statements.ts), and
 *    MikroORM's bookkeeping updated as a flush would (new snapshot, version;
 *    keepSnapshot()).
 *    No change at all: nothing is sent.
 * 2. The fork holds app entities too: MikroORM flushes.  In onFlush, once the
 *    change sets are known, a flush whose only change set is the session row
 *    is handed the driver's autocommit client, so MikroORM opens no
 *    transaction around its one statement.
 * 3. Anything else (app entities changed, an open transaction, a
 *    row-level-security session context, which only a transaction applies):
 *    MikroORM's flush exactly as it is.
 *
 * MikroORM's own switch, `implicitTransactions: false`, is global and would
 * also un-wrap the app's multi-statement flushes: never an option here.
 * Path 1 dispatches no flush or entity event, so a subscriber listening to
 * them (other than this module's) sends the request to path 2; path 2 skips
 * only the transaction events.
 *
 * Paths 1 and 2 use MikroORM internals.  They run only on an ORM whose
 * internals were found as expected at start-up (internals.ts); otherwise, and
 * for a request where path 1 meets a TypeError before sending anything, the
 * row is written by path 3.
 */
export async function writeSession(
  em: EntityManager,
  meta: EntityMetadata<SessionRow>,
  statements: SessionStatements | undefined,
  merge?: (row: SessionRow) => Promise<boolean>,
): Promise<void> {
  // MikroORM's flush may open a transaction of its own: its checkout is recorded (connection-failures.ts).
  const flush = () => recordingCheckouts(em, () => em.flush());
  if (em.isInTransaction() || em.getSessionContext() || !trusted(em)) return flush();
  if (statements?.writes && !hasListeners(em, meta)) {
    const written = await writeAlone(em, meta, statements, merge);
    if (written === true) return;
    if (written === PUBLIC_PATH) return flush();
  }
  sessionOnly.set(em, meta);
  try {
    await flush();
  } finally {
    sessionOnly.delete(em);
    restoreContext(em);
  }
}

/**
 * Once per ORM (registering twice is a no-op): lets writeSession() decide per
 * flush.  Also where the internals are checked, when session() is created.
 */
export function watchFlushes(orm: MikroORM): void {
  if (trustInternals(orm)) orm.em.getEventManager().registerSubscriber(subscriber);
}

// ---- path 1: the session row alone, with its prepared statement ----

/** writeAlone() met a TypeError before sending anything: the row goes to MikroORM's flush, in its own transaction. */
const PUBLIC_PATH = Symbol('public path');

/** The statement path 1 sends for the row, with what MikroORM is told once it succeeded. */
type Write =
  | { kind: 'delete'; row: SessionRow; send: boolean }
  | { kind: 'insert'; row: SessionRow; snapshot: Record<string, unknown>; sql: string; params: unknown[] }
  | {
      kind: 'update';
      row: SessionRow;
      snapshot: Record<string, unknown>;
      sql: string;
      params: unknown[];
      version: number;
    };

/**
 * Merges of a concurrent write tried before the request gives up with 409:
 * each writer of N parallel ones may find the row changed by each other one.
 */
const MERGE_ATTEMPTS = 16;

/**
 * true: written (or nothing to write); false: not the row alone (path 2); PUBLIC_PATH: see above.
 * On a version conflict, `merge` may replay the request's changes onto the other writer's row
 * (merge.ts); the write is then planned and sent again.
 */
async function writeAlone(
  em: EntityManager,
  meta: EntityMetadata<SessionRow>,
  statements: SessionStatements,
  merge?: (row: SessionRow) => Promise<boolean>,
  attempt = 0,
): Promise<boolean | typeof PUBLIC_PATH> {
  const uow = em.getUnitOfWork();
  let write: Write | boolean;
  try {
    write = planWrite(em, uow, meta, statements);
  } catch (error) {
    // A changed internal fails this way (so would a value the snapshot can't take, which MikroORM's flush then
    // reports itself).  Nothing was sent or changed yet: safe to flush instead.
    if (error instanceof TypeError) return PUBLIC_PATH;
    throw error;
  }
  if (typeof write === 'boolean') return write;
  // From here on a statement is sent: a later error is not retried, as a retry could write the row twice.
  const { row } = write;
  const connection = em.getConnection('write');
  // As the driver's own prepared statements (native-statements.ts), which answer undefined where MikroORM's path must run.
  const send = async (sql: string, params: unknown[]) =>
    (await statements.native?.write(em, sql, params)) ??
    (await connection.execute<{ affectedRows: number }>(sql, params, 'run'));
  if (write.kind === 'delete') {
    if (write.send) await send(statements.delete, [row.id]);
    uow.unsetIdentity(row);
    return true;
  }
  if (write.kind === 'insert') {
    await send(write.sql, write.params);
  } else {
    // What SessionBase's beforeUpdate hook does in a flush: the new version goes with the change, the old one guards
    // it.
    row.version = write.version + 1;
    const result = await send(write.sql, write.params);
    if (result.affectedRows !== 1) {
      row.version = write.version;
      // Only the row was to be written, and nothing was: merging and sending again is safe.
      if (merge && attempt < MERGE_ATTEMPTS && (await merge(row)))
        return writeAlone(em, meta, statements, merge, attempt + 1);
      throw OptimisticLockError.lockFailed(row);
    }
  }
  if (write.kind === 'update') keepSnapshot(uow, row, write.snapshot);
  else uow.register(row, write.snapshot as any, { refresh: true });
  uow.getPersistStack().delete(row);
  return true;
}

/**
 * After an UPDATE, what a flush leaves behind: the row's new snapshot.  The
 * row was loaded whole and is managed, so of what UnitOfWork.register() does
 * (identity map, loaded properties, relation values normalised) only the
 * snapshot is left to do, and register() costs 7 k instructions of a write's
 * 283 k (BENCHMARKS.md, issue 12, eighth step).  The snapshot is a field of
 * MikroORM's WrappedEntity, which is internal: a MikroORM that keeps it
 * elsewhere answers getOriginalEntityData() with another object, and
 * register() is called after all.
 */
function keepSnapshot(uow: UnitOfWork, row: SessionRow, snapshot: Record<string, unknown>): void {
  (wrap(row, true) as unknown as { __originalEntityData?: unknown }).__originalEntityData = snapshot;
  if (uow.getOriginalEntityData(row) !== snapshot) uow.register(row, snapshot as any, { refresh: true });
}

/** What writeAlone() sends, computed with MikroORM's snapshot and field mapping; changes nothing. */
function planWrite(
  em: EntityManager,
  uow: UnitOfWork,
  meta: EntityMetadata<SessionRow>,
  statements: SessionStatements,
): Write | boolean {
  const row = soleEntity(uow);
  if (row === null) return true; // nothing to write at all
  if (!row || !(row instanceof meta.class)) return false;
  const original = uow.getOriginalEntityData(row);
  if (uow.getRemoveStack().has(row)) return { kind: 'delete', row, send: !!original };
  const comparator = em.getComparator();
  const snapshot = comparator.prepareEntity(row) as Record<string, unknown>;
  if (!original) {
    const { columns, values } = statements.columnValues(em, snapshot);
    return { kind: 'insert', row, snapshot, sql: statements.insert(columns), params: values };
  }
  const changes = comparator.getEntityComparator(meta.class)(original as any, snapshot as any) as Record<
    string,
    unknown
  >;
  if (!hasKeys(changes)) return true;
  const version = row.version;
  snapshot.version = changes.version = version + 1;
  const { columns, values: params } = statements.columnValues(em, changes);
  params.push(row.id, version);
  return { kind: 'update', row, snapshot, sql: statements.update(columns), params, version };
}

/** The one entity the fork manages or has scheduled; null for none, undefined for several. */
function soleEntity(uow: UnitOfWork): SessionRow | null | undefined {
  if (uow.getOrphanRemoveStack().size > 0) return undefined;
  let sole: object | null = null;
  for (const entities of [uow.getIdentityMap(), uow.getPersistStack(), uow.getRemoveStack()] as Iterable<object>[]) {
    for (const entity of entities) {
      if (sole === null) sole = entity;
      else if (sole !== entity) return undefined;
    }
  }
  return sole as SessionRow | null;
}

function hasKeys(object: object): boolean {
  for (const _ in object) return true;
  return false;
}

// ---- path 2: MikroORM's flush, without BEGIN/COMMIT when only the session row changed ----

const sessionOnly = new WeakMap<EntityManager, EntityMetadata>();
/** The autocommit client a flush was handed, until the flush is over. */
const handed = new WeakMap<EntityManager, Transaction>();

const subscriber: EventSubscriber = {
  onFlush({ em, uow }: FlushEventArgs): void {
    const meta = sessionOnly.get(em);
    if (!meta) return;
    sessionOnly.delete(em);
    try {
      const changeSets = uow.getChangeSets();
      if (changeSets.length !== 1 || changeSets[0].meta !== meta || uow.getCollectionUpdates().length > 0) return;
      if (laterOnFlush(em)) return;
      const client = autocommitClient(em);
      if (!client) return;
      em.setTransactionContext(client);
      handed.set(em, client);
    } catch (error) {
      // onFlush runs before the flush sends anything: on a TypeError of the internals, MikroORM opens its transaction
      // as usual.
      if (!(error instanceof TypeError)) throw error;
    }
  },
};

/**
 * MikroORM restores the flush's previous transaction context (none, here) when
 * the flush ends.  Should a release stop doing so, the autocommit client would
 * outlive the flush and make a later flush of the request skip its
 * transaction: this puts the context back.
 */
function restoreContext(em: EntityManager): void {
  const client = handed.get(em);
  if (client === undefined) return;
  handed.delete(em);
  if (em.getTransactionContext() === client) em.resetTransactionContext();
}

/** True when an onFlush subscriber runs after this one: it could still add change sets to the flush. */
function laterOnFlush(em: EntityManager): boolean {
  let after = false;
  for (const other of em.getEventManager().getSubscribers()) {
    if (after && 'onFlush' in other) return true;
    if (other === subscriber) after = true;
  }
  return false;
}

/** The SQL drivers' Kysely instance: queries given it run on a pooled connection in autocommit. */
function autocommitClient(em: EntityManager): Transaction | undefined {
  const connection = em.getConnection('write') as { getClient?: () => Transaction };
  return typeof connection.getClient === 'function' ? connection.getClient() : undefined;
}

// ---- who else listens ----

function nameOf(entity: unknown): string | undefined {
  if (typeof entity === 'string') return entity;
  if (EntitySchema.is(entity)) return entity.meta.className;
  return (entity as { name?: string }).name;
}

/** Events path 1 does not dispatch for the session row. */
const SKIPPED_EVENTS = [
  'beforeCreate',
  'afterCreate',
  'beforeUpdate',
  'afterUpdate',
  'beforeDelete',
  'afterDelete',
  'beforeFlush',
  'onFlush',
  'afterFlush',
];
const FLUSH_EVENTS = new Set(['beforeFlush', 'onFlush', 'afterFlush']);

/** True when a subscriber other than this module's would miss an event of the session row's write. */
function hasListeners(em: EntityManager, meta: EntityMetadata): boolean {
  for (const other of em.getEventManager().getSubscribers()) {
    if (other === subscriber) continue;
    for (const event of SKIPPED_EVENTS) {
      if (!(event in other)) continue;
      // Flush events reach every subscriber; entity events only those subscribed to the entity (or to all).
      if (FLUSH_EVENTS.has(event)) return true;
      const entities = other.getSubscribedEntities?.() ?? [];
      if (entities.length === 0 || entities.some((entity) => nameOf(entity) === meta.className)) return true;
    }
  }
  return false;
}
