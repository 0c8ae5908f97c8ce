import {
  DeadlockException,
  DriverException,
  LockMode,
  LockWaitTimeoutException,
  MikroORM,
  raw,
  type EntityManager,
  type EntityName,
} from '@mikro-orm/core';
import { inspectSessionEntity, type SessionModel } from './entity.js';
import { ConfigurationError } from './errors.js';
import { provides, type Expiry, type Feature } from './features/feature.js';
import { FEATURES } from './features/index.js';
import { resolveSettings } from './settings.js';
import { isPostgreSql } from './statements.js';

/** Options of collectGarbage() and countExpiredSessions(). */
export interface ExpiredSessionsOptions {
  /** An initialised MikroORM instance whose entities include `entity`. */
  orm: MikroORM;
  /** The session entity: defineSessionEntity(...) or one extending SessionBase. */
  entity: EntityName<any>;
  /** The app's idleTimeout (seconds), or null: the same value the middleware runs with. */
  idleTimeout?: number | null;
  /** The app's absoluteTimeout (seconds), or null. */
  absoluteTimeout?: number | null;
  /** Milliseconds since the epoch; Date.now by default. Read once, at the start. */
  clock?: () => number;
}

/** Progress after each batch that deleted rows. */
export interface GarbageCollectionProgress {
  /** Rows deleted so far. */
  deleted: number;
  /** Batches that deleted rows so far. */
  batches: number;
  /** Rows this batch deleted. */
  batchDeleted: number;
}

export interface GarbageCollectionOptions extends ExpiredSessionsOptions {
  /** The most rows one batch selects and deletes: 1 to 10000, 1000 by default. */
  batchSize?: number;
  /** Stops between two batches; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called after every batch that deleted rows; a returned promise is awaited. */
  onBatch?: (progress: GarbageCollectionProgress) => void | Promise<void>;
}

export interface GarbageCollectionResult {
  /** Expired sessions deleted. */
  deleted: number;
  /** Batches that deleted rows. */
  batches: number;
}

/** Large enough to amortise a statement, small enough for every database's bound-parameter limit. */
export const MAX_BATCH_SIZE = 10_000;
const COMMON_OPTIONS = ['orm', 'entity', 'idleTimeout', 'absoluteTimeout', 'clock'];
const GC_OPTIONS = new Set([...COMMON_OPTIONS, 'batchSize', 'signal', 'onBatch']);

/** The timeouts a row can expire by: the catalogue's features with an expiry column (idle, absolute). */
const TIMEOUTS = FEATURES.flatMap((feature) =>
  feature.expiry && !feature.includes ? [{ feature, ...(feature.expiry as Expiry) }] : [],
);

/**
 * Deletes the sessions that expired by idle or absolute timeout, per-session
 * timeouts included, with the middleware's rules: a timeout is on for a row
 * when its global setting is not null or, with a configurable variant, when
 * the row's own timeout column is not null; the row has expired when its
 * expiry column is at or before now.  Without any timeout on, nothing is
 * deleted.
 *
 * The rows go in batches of at most `batchSize`, each through a fresh
 * EntityManager fork, so memory stays flat and no statement locks more than
 * one batch.  On PostgreSQL a batch is one statement,
 * `DELETE ... WHERE id IN (SELECT id ... LIMIT n FOR UPDATE SKIP LOCKED)`, so
 * instances collecting at the same time never delete the same rows.  Elsewhere
 * a batch selects the ids, then deletes those ids that are still expired.
 */
export async function collectGarbage(options: GarbageCollectionOptions): Promise<GarbageCollectionResult> {
  const plan = planCollection(options, GC_OPTIONS, 'collectGarbage');
  const { batchSize = 1000, signal, onBatch } = options;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) {
    throw new ConfigurationError(
      `collectGarbage: option batchSize must be a whole number from 1 to ${MAX_BATCH_SIZE} (got ${String(batchSize)})`,
    );
  }
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new ConfigurationError('collectGarbage: option signal must be an AbortSignal');
  if (onBatch !== undefined && typeof onBatch !== 'function')
    throw new ConfigurationError('collectGarbage: option onBatch must be a function');
  const result: GarbageCollectionResult = { deleted: 0, batches: 0 };
  if (!plan.where) return result;
  const deleteBatch = isPostgreSql(plan.orm.em.getPlatform()) ? deleteLockedBatch : selectThenDelete;
  for (;;) {
    signal?.throwIfAborted();
    const batch = await retried(plan.orm, () => {
      const em = fork(plan.orm);
      return deleteBatch(em, plan, batchSize).finally(() => em.clear());
    });
    if (batch.deleted > 0) {
      result.deleted += batch.deleted;
      result.batches++;
      await onBatch?.({ ...result, batchDeleted: batch.deleted });
    }
    // A short batch was the last one: nothing else was expired (or unlocked) when it ran.
    if (batch.found < batchSize) return result;
  }
}

/** How many sessions collectGarbage() would delete now: one COUNT with the same condition. */
export async function countExpiredSessions(options: ExpiredSessionsOptions): Promise<number> {
  const plan = planCollection(options, new Set(COMMON_OPTIONS), 'countExpiredSessions');
  if (!plan.where) return 0;
  const em = fork(plan.orm);
  try {
    const row = await em.createQueryBuilder(plan.entity, undefined, PRIMARY).count().where(plan.where).execute('get');
    return Number(row?.count ?? 0);
  } finally {
    em.clear();
  }
}

/** What a collection deletes, resolved and validated once. */
export interface Plan {
  orm: MikroORM;
  entity: EntityName<any>;
  /** The primary key's property. */
  pk: string;
  /** The filter that matches expired rows; undefined when no timeout can be on. */
  where: Record<string, unknown> | undefined;
  /** Each timeout that can be on, in words: 'idle timeout 1800 s', 'per-session absolute timeouts'. */
  rules: string[];
}

/**
 * Validates the options shared by collectGarbage() and countExpiredSessions().
 * @internal The CLI describes the plan with it; not exported by the package.
 */
export function planCollection(
  options: ExpiredSessionsOptions,
  names: ReadonlySet<string> = new Set(COMMON_OPTIONS),
  fn = 'countExpiredSessions',
): Plan {
  if (!options || typeof options !== 'object')
    throw new ConfigurationError(`${fn}(options): options must be an object with orm and entity`);
  for (const name of Object.keys(options))
    if (!names.has(name)) throw new ConfigurationError(`${fn}: unknown option ${name}`);
  const { orm, entity, clock = Date.now } = options;
  if (!(orm instanceof MikroORM))
    throw new ConfigurationError(
      `${fn}: option orm must be an initialised MikroORM instance (await MikroORM.init(...))`,
    );
  if (typeof clock !== 'function')
    throw new ConfigurationError(`${fn}: option clock must be a function returning milliseconds since the epoch`);
  if (typeof (orm.em as { createQueryBuilder?: unknown }).createQueryBuilder !== 'function') {
    throw new ConfigurationError(
      `${fn}: the ORM's driver has no query builder; use an SQL driver (@mikro-orm/postgresql, @mikro-orm/mariadb or ` +
        `@mikro-orm/sqlite)`,
    );
  }
  let settings: { idleTimeout: number | null; absoluteTimeout: number | null };
  try {
    settings = resolveSettings({ idleTimeout: options.idleTimeout, absoluteTimeout: options.absoluteTimeout });
  } catch (error) {
    throw new ConfigurationError(`${fn}: ${(error as Error).message}`);
  }
  const model = inspectSessionEntity(orm, entity);
  const now = Math.floor(clock() / 1000);
  if (!Number.isSafeInteger(now))
    throw new ConfigurationError(`${fn}: option clock returned ${String(clock())}, not milliseconds since the epoch`);
  return {
    orm,
    entity: model.meta.class,
    pk: model.meta.primaryKeys[0] as string,
    ...expiredFilter(model, settings, now, fn),
  };
}

/** `{ $or: [...] }` over the timeouts that can be on, or undefined when none can. */
function expiredFilter(
  model: SessionModel,
  settings: Record<Expiry['setting'], number | null>,
  now: number,
  fn: string,
) {
  const any: Record<string, unknown>[] = [];
  const rules: string[] = [];
  for (const { feature, setting, column, label } of TIMEOUTS) {
    const embedded = model.features.find((candidate) => provides(candidate.feature, feature));
    if (!embedded) {
      if (settings[setting] !== null) {
        const variant = feature.configurableAs ? ` (or ${feature.configurableAs})` : '';
        throw new ConfigurationError(
          `${fn}: option ${setting} needs the ${feature.name} feature: entity ${model.meta.className} embeds no ` +
            `${feature.name}${variant}`,
        );
      }
      continue;
    }
    const expired: Record<string, unknown> = { [column]: { $lte: now } };
    if (settings[setting] !== null) {
      any.push({ [embedded.property]: expired });
      rules.push(
        `${label} timeout ${settings[setting]} s` +
          (ownsSetting(embedded.feature, setting) ? " (or the session's own)" : ''),
      );
    } else if (ownsSetting(embedded.feature, setting)) {
      any.push({ [embedded.property]: { ...expired, [setting]: { $ne: null } } });
      rules.push(`per-session ${label} timeouts`);
    }
  }
  return { where: any.length ? { $or: any } : undefined, rules };
}

/** Whether rows of this feature store their own value of the setting (a configurable variant). */
function ownsSetting(feature: Feature<any>, setting: string): boolean {
  return (feature.configurable as readonly string[] | undefined)?.includes(setting) ?? false;
}

/** Attempts of one batch that the database ended as a deadlock or a lock-wait timeout. */
const BATCH_ATTEMPTS = 5;

/**
 * Runs a batch again when the database chose it as a deadlock's victim or it
 * waited too long for a lock: each batch is one statement (or a SELECT and a
 * DELETE that re-checks the expiry), so a new attempt is exact. InnoDB picks a
 * collector's DELETE as the victim now and then when other collectors and
 * requests lock the same rows in another order (test/processes.test.ts ran
 * into it); a collection must not fail, and report nothing of what it had
 * deleted, for that. The query builder throws the driver's own error, so it is
 * classified the way MikroORM converts it (MariaDB 1213 and 1205, PostgreSQL
 * 40P01 and 40001 become DeadlockException or LockWaitTimeoutException).
 */
async function retried<T>(orm: MikroORM, batch: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await batch();
    } catch (error) {
      if (attempt >= BATCH_ATTEMPTS || !contended(orm, error)) throw error;
    }
  }
}

function contended(orm: MikroORM, error: unknown): boolean {
  let converted = error;
  if (error instanceof Error && !(error instanceof DriverException)) {
    try {
      converted = orm.em.getDriver().convertException(error);
    } catch {
      return false;
    }
  }
  return converted instanceof DeadlockException || converted instanceof LockWaitTimeoutException;
}

/** The query builder of SQL drivers' EntityManager, which core's type does not declare. */
type SqlEntityManager = EntityManager & {
  createQueryBuilder(entity: EntityName<any>, alias?: string, type?: 'read' | 'write'): any;
};

/** Collection reads from the primary, whatever preferReadReplicas says (see selectThenDelete). */
const PRIMARY = 'write';

function fork(orm: MikroORM): SqlEntityManager {
  return orm.em.fork({ clear: true }) as unknown as SqlEntityManager;
}

/** PostgreSQL: one statement; rows another instance has locked are skipped, not waited for. */
async function deleteLockedBatch(em: SqlEntityManager, plan: Plan, batchSize: number) {
  const ids = em.createQueryBuilder(plan.entity).select(plan.pk).where(plan.where).limit(batchSize).getNativeQuery();
  ids.lockMode(LockMode.PESSIMISTIC_PARTIAL_WRITE, []);
  const { sql, params } = ids.compile();
  const { affectedRows } = await em
    .createQueryBuilder(plan.entity)
    .delete({ [plan.pk]: { $in: raw(sql, params) } })
    .execute('run');
  return { found: affectedRows, deleted: affectedRows };
}

/**
 * MariaDB, SQLite: select a batch of ids, then delete them by primary key.  The
 * DELETE repeats the condition, so a row whose expiry moved in between stays.
 */
async function selectThenDelete(em: SqlEntityManager, plan: Plan, batchSize: number) {
  // From the primary: ids a lagging replica still lists, but the primary deleted, would come back batch after batch.
  const rows: Record<string, unknown>[] = await em
    .createQueryBuilder(plan.entity, undefined, PRIMARY)
    .select(plan.pk)
    .where(plan.where)
    .limit(batchSize)
    .execute('all');
  if (rows.length === 0) return { found: 0, deleted: 0 };
  const ids = rows.map((row) => row[plan.pk]);
  const { affectedRows } = await em
    .createQueryBuilder(plan.entity)
    .delete({ $and: [{ [plan.pk]: { $in: ids } }, plan.where] })
    .execute('run');
  return { found: rows.length, deleted: affectedRows };
}
