import { AsyncLocalStorage } from 'node:async_hooks';
import {
  DeadlockException,
  LockWaitTimeoutException,
  OptimisticLockError,
  type Configuration,
  type EntityManager,
  type IsolationLevel,
  type MikroORM,
} from '@mikro-orm/core';
import { SessionError, SessionStoreUnavailableError } from './errors.js';
import { nativePgPool } from './pg-pool.js';

/**
 * What the library does when the database connection fails under a request:
 * the connection is given back to the pool as broken, and the request fails
 * with SessionStoreUnavailableError (503) when the session's own load, begin
 * or commit could not reach the database.
 *
 * Why the release is needed: MikroORM 7.2.x (up to 7.2.5, the newest) runs
 * each transaction on a Kysely ControlledTransaction, and pins Kysely 0.29.6.
 * In that Kysely the transaction's pool connection is released only when
 * BEGIN, COMMIT or ROLLBACK succeeds (ControlledTransactionBuilder.execute(),
 * ControlledTransaction.commit()/rollback() in kysely/dist/kysely.js), and the
 * release function lives only in the transaction's private fields.  A
 * connection that dies inside a transaction therefore stays checked out of
 * the pool forever; after `pool.max` such deaths every query waits forever.
 * Kysely 0.29.7 releases on a failed BEGIN or ROLLBACK; MikroORM does not use
 * it yet.  Per database:
 *
 * - PostgreSQL (pg-pool): leaks.  Each checkout the request makes while it
 *   begins, or while its commit opens a transaction of its own (MikroORM's
 *   flush, the BEGIN of deferred statements), is recorded; when the
 *   request's BEGIN or ROLLBACK (or a default-mode flush's own transaction)
 *   failed, the recorded checkouts are released with the error, which makes
 *   pg-pool destroy the client.  A checkout that was released already
 *   ignores it (pg-pool hands out a new release function with every
 *   checkout and refuses a second call of one), so nothing released
 *   normally, or checked out again by another request, is touched; on a
 *   Kysely that released the connection itself this is a no-op.
 * - MariaDB/MySQL (mysql2): does not leak; mysql2 drops a connection from its
 *   pool as soon as the connection reports a fatal error.  Nothing to do.
 * - SQLite: one connection, which can't be destroyed, behind a mutex that a
 *   failed ROLLBACK never unlocks: when SQLite ended the transaction itself
 *   (INSERT OR ROLLBACK, a full disk, a statement that committed), ROLLBACK
 *   fails with "no transaction is active" and every later query of the app
 *   waits forever.  When the database reports that no transaction is open,
 *   an empty transaction is opened on the same connection and rolled back,
 *   which lets Kysely release it as it normally does.
 *
 * The internals relied on, and their fallbacks: the recording wraps the
 * `connect()` of the pool MikroORM's public `getNativeClient()` returns (the
 * pg Pool), and needs Kysely to call it from the request's async context and
 * pg-pool to put a `release(error)` on each client it hands out (both public
 * pg API).  It is set up once per ORM, when session() is created; a pool that
 * doesn't look like pg-pool is left alone, and a begin that records nothing
 * (a Kysely that acquires differently) turns the recording off with a process
 * warning: the library then behaves as MikroORM does.  The SQLite path uses
 * only public API (the transaction's `isCommitted`/`isRolledBack`, the
 * database's `inTransaction`/`isTransaction`, and `execute()` on the
 * transaction) and does nothing when any of them is missing.
 */

/** A pg-pool checkout's release function: `release(error)` destroys the client. */
type Release = (error?: Error | boolean) => void;

/** The checkouts made by one request's begin and commits (recorded only in `recording`). */
const checkouts = new WeakMap<EntityManager, Release[]>();
const recording = new AsyncLocalStorage<Release[]>();

interface Guard {
  /** Set while the pool is being looked up (once per ORM, at start-up). */
  pending: Promise<void> | undefined;
  /** The write pool's connect() is wrapped: checkouts can be recorded and released. */
  hooked: boolean;
}

/** Per ORM, by its Configuration: the one object every fork shares with it. */
const guards = new WeakMap<Configuration, Guard>();
/** Pools whose connect() is wrapped already: never twice. */
const hookedPools = new WeakSet<object>();

/** The code of the process warning emitted when broken connections can't be released. */
export const CONNECTIONS_WARNING = 'KOA_MIKRO_SESSION_CONNECTIONS';

/** Once per ORM, when session() is created: finds the write pool and prepares the recording. */
export function guardConnections(orm: MikroORM): void {
  if (guards.has(orm.config)) return;
  const guard: Guard = { pending: undefined, hooked: false };
  guards.set(orm.config, guard);
  guard.pending = hookPool(orm.em, guard).finally(() => (guard.pending = undefined));
}

async function hookPool(em: EntityManager, guard: Guard): Promise<void> {
  const pool = await nativePgPool(em);
  if (!pool) return; // SQLite, mysql2 (which drops dead connections itself), or an unknown pool
  if (!hookedPools.has(pool)) {
    hookedPools.add(pool);
    const connect = pool.connect;
    pool.connect = function (this: unknown, ...args: unknown[]) {
      const record = recording.getStore();
      // Outside a recording, and callback-style calls (pool.query()'s own): pg-pool as it is.
      if (!record || args.length > 0) return connect.apply(this, args);
      return (connect.apply(this, args) as Promise<{ release?: unknown }>).then((client) => {
        if (typeof client?.release === 'function') record.push(client.release as Release);
        return client;
      });
    };
  }
  guard.hooked = true;
}

/** Runs `fn` recording the pool checkouts it makes, as the request's. */
async function recorded<T>(em: EntityManager, fn: () => Promise<T>): Promise<T> {
  let record = checkouts.get(em);
  if (!record) checkouts.set(em, (record = []));
  return recording.run(record, fn);
}

/**
 * Begins the request's transaction (transaction mode).  A BEGIN that failed
 * releases its connection as broken; a database that can't be reached is a
 * SessionStoreUnavailableError.
 */
export async function beginTransaction(em: EntityManager, options: { isolationLevel?: IsolationLevel }): Promise<void> {
  const guard = guards.get(em.config);
  if (guard?.pending) await guard.pending; // only the first requests: the pool is looked up once
  if (!guard?.hooked) return unavailableOn('load', em.begin(options));
  const before = checkouts.get(em)?.length ?? 0;
  try {
    await recorded(em, () => em.begin(options));
  } catch (error) {
    await releaseBroken(em, error);
    throw unavailable('load', error);
  }
  if ((checkouts.get(em)?.length ?? 0) === before && em.isInTransaction()) {
    guard.hooked = false;
    process.emitWarning(
      "koa-mikro-session: the transaction did not take its connection through the pg pool's connect(), so a " +
        "connection that breaks inside a transaction cannot be released by the library; MikroORM's own behaviour " +
        'applies',
      { code: CONNECTIONS_WARNING },
    );
  }
}

/**
 * Runs `open`, a call of the commit that may open a transaction of its own
 * (MikroORM's flush outside the request's transaction, the BEGIN deferred
 * statements need), recording its pool checkouts as the request's.  Only
 * there: a transaction opened earlier holds the connection its BEGIN checked
 * out (recorded by beginTransaction()), and a statement sent on its own (a
 * pg named statement, an autocommit UPDATE) is released by whoever sent it,
 * so recording the whole commit cost an async context per request for
 * nothing on the common path (the session row written alone).
 */
export function recordingCheckouts<T>(em: EntityManager, open: () => Promise<T>): Promise<T> {
  return guards.get(em.config)?.hooked && !em.isInTransaction() ? recorded(em, open) : open();
}

/**
 * Runs one commit of the session (save() and the end of the request).  When
 * it failed outside a transaction that is still open (the default mode's
 * flush, with its own transaction), what it left checked out is released as
 * broken; a failure in the request's transaction is left to rollback().  A
 * database that can't be reached is a SessionStoreUnavailableError.
 */
export async function guardCommit(em: EntityManager, commit: () => Promise<void>): Promise<void> {
  const guard = guards.get(em.config);
  if (guard?.pending) await guard.pending;
  try {
    await commit();
  } catch (error) {
    if (!em.isInTransaction()) await releaseBroken(em, error);
    throw unavailable('save', error);
  }
}

/** The session's load: a database that can't be reached is a SessionStoreUnavailableError. */
export function guardLoad(load: Promise<void>): Promise<void> {
  return unavailableOn('load', load);
}

/**
 * Rolls the request's transaction back.  When ROLLBACK fails, the
 * transaction's connection is released as broken and the failure is not
 * thrown: a dead connection's transaction is rolled back by the database,
 * and the request fails with the error that made it roll back.
 */
export async function rollbackTransaction(em: EntityManager): Promise<void> {
  try {
    await em.rollback();
  } catch (error) {
    await releaseBroken(em, error);
  }
}

/**
 * Gives back what a failed BEGIN, COMMIT or ROLLBACK left checked out.  Only
 * for checkouts the request's own awaited calls made, after they settled:
 * nothing else still uses them.
 */
async function releaseBroken(em: EntityManager, error: unknown): Promise<void> {
  const record = checkouts.get(em);
  const broken = error instanceof Error ? error : new Error(String(error));
  let released = false;
  for (const release of record?.splice(0) ?? []) {
    try {
      release(broken);
      released = true;
    } catch {
      // released already: by Kysely when its statement succeeded, or by a Kysely that releases on failure
    }
  }
  const trx = em.getTransactionContext() as { isCommitted?: unknown; isRolledBack?: unknown } | undefined;
  if (!trx) return;
  if (!released && trx.isCommitted === false && trx.isRolledBack === false && (await reopenAndRollBack(em, trx)))
    return;
  // The transaction is over either way: ctx.em goes on without it (MikroORM keeps it after a failed rollback).
  if (released || trx.isCommitted === true || trx.isRolledBack === true) em.resetTransactionContext?.();
}

/**
 * SQLite: the database ended the transaction itself, so ROLLBACK fails and
 * Kysely keeps the only connection locked.  Opening an empty transaction and
 * rolling it back lets Kysely release it.  Only when the database says no
 * transaction is open: on a server, BEGIN inside a transaction may commit it.
 */
async function reopenAndRollBack(em: EntityManager, trx: object): Promise<boolean> {
  try {
    const connection = em.getConnection('write') as { getNativeClient?: () => Promise<unknown> };
    if (typeof connection.getNativeClient !== 'function') return false;
    const database = (await connection.getNativeClient()) as {
      inTransaction?: unknown;
      isTransaction?: unknown;
    } | null;
    const open = database?.inTransaction ?? database?.isTransaction; // better-sqlite3, node:sqlite
    if (open !== false) return false;
    await em.getConnection('write').execute('begin', [], 'run', trx as never);
    await em.rollback();
    return true;
  } catch {
    return false;
  }
}

async function unavailableOn(action: 'load' | 'save', promise: Promise<void>): Promise<void> {
  try {
    await promise;
  } catch (error) {
    throw unavailable(action, error);
  }
}

/** `error`, or a SessionStoreUnavailableError carrying it when it says the database can't be reached. */
function unavailable(action: 'load' | 'save', error: unknown): unknown {
  return isUnreachable(error) ? new SessionStoreUnavailableError(action, { cause: error }) : error;
}

/** Socket errors: the server refused, reset or dropped the connection, or can't be found. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** mysql2 and MariaDB/MySQL: connection lost, too many connections, shutdown, killed, server gone. */
const MYSQL_CODES = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_CONNECTION_KILLED',
  'CR_CONNECTION_ERROR',
  'CR_CONN_HOST_ERROR',
  'CR_SERVER_GONE_ERROR',
  'CR_SERVER_LOST',
]);
const MYSQL_ERRNOS = new Set([1040, 1053, 1927, 2002, 2003, 2006, 2013]);
/** Fatal mysql2 errors that are a configuration mistake, not an outage. */
const MYSQL_CONFIGURATION = new Set([
  'ER_ACCESS_DENIED_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  'ER_BAD_DB_ERROR',
  'ER_NOT_SUPPORTED_AUTH_MODE',
]);
/** PostgreSQL: admin or crash shutdown, the server starting up, too many connections (class 08 is checked apart). */
const POSTGRES_CODES = new Set(['57P01', '57P02', '57P03', '53300']);
/** pg's and pg-pool's own errors, which carry no code. */
const PG_MESSAGES = [
  'Connection terminated',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'timeout exceeded when trying to connect',
];

/**
 * True when `error` (or what it wraps: `cause`, an AggregateError's errors,
 * and MikroORM's DriverException, which copies the driver's code) says the
 * database could not be reached or the connection was lost.  Conflicts and
 * the library's own errors are never that.
 */
export function isUnreachable(error: unknown, depth = 0): boolean {
  if (depth > 4 || typeof error !== 'object' || error === null) return false;
  if (
    error instanceof SessionError ||
    error instanceof OptimisticLockError ||
    error instanceof DeadlockException ||
    error instanceof LockWaitTimeoutException
  ) {
    return false;
  }
  const { code, errno, sqlState, fatal, message, cause, errors } = error as Record<string, unknown>;
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code) || MYSQL_CODES.has(code) || POSTGRES_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code))
      return true;
    if (MYSQL_CONFIGURATION.has(code)) return false;
  }
  if (typeof errno === 'number' && MYSQL_ERRNOS.has(errno)) return true;
  if (typeof sqlState === 'string' && sqlState.startsWith('08')) return true;
  if (fatal === true) return true; // mysql2: the connection is unusable
  if (typeof message === 'string' && PG_MESSAGES.some((text) => message.startsWith(text))) return true;
  if (Array.isArray(errors) && errors.some((inner) => isUnreachable(inner, depth + 1))) return true;
  return isUnreachable(cause, depth + 1);
}
