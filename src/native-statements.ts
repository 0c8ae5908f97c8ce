import { Configuration, type EntityManager } from '@mikro-orm/core';

/**
 * The session row's own SQL (statements.ts) sent through the database
 * driver's own prepared statements instead of MikroORM's connection.execute(),
 * which formats the values into a new SQL text for every statement and sends
 * it through Kysely: PostgreSQL's in pg-statements.ts, SQLite's in
 * sqlite-statements.ts, MariaDB's and MySQL's in mysql-statements.ts.  Each
 * answers undefined, having sent nothing, where the statement must take
 * MikroORM's path instead; the caller then takes it.  A statement that was
 * sent is never retried on the other path: a retry could write twice.
 */
export interface NativeStatements {
  /** A SELECT's rows, or undefined for MikroORM's path. */
  select(em: EntityManager, sql: string, params: unknown[]): Promise<Record<string, unknown>[] | undefined>;
  /** An INSERT's, UPDATE's or DELETE's affected rows, or undefined for MikroORM's path. */
  write(em: EntityManager, sql: string, params: unknown[]): Promise<{ affectedRows: number } | undefined>;
}

/** What the logger reports of a statement's result. */
export interface Outcome {
  results?: number;
  affected?: number | null;
}

/**
 * `send`, logged as MikroORM logs its own statements when its query log is on
 * (with the time it took, failed or not), and its driver error converted as
 * MikroORM converts its own.  Timed only for the log.
 */
export async function sendLogged<T>(
  em: EntityManager,
  sql: string,
  params: unknown[],
  send: () => Promise<T> | T,
  outcome: (result: T) => Outcome,
): Promise<T> {
  if (!em.config.getLogger().isEnabled('query')) {
    try {
      return await send();
    } catch (error) {
      throw convert(em, error);
    }
  }
  const started = Date.now();
  try {
    const result = await send();
    log(em, sql, params, { took: Date.now() - started, ...outcome(result) });
    return result;
  } catch (error) {
    log(em, sql, params, { took: Date.now() - started, level: 'error' });
    throw convert(em, error);
  }
}

/** As MikroORM logs its own statements: the `?` text, with the values inlined under debug 'query-params'. */
function log(
  em: EntityManager,
  sql: string,
  params: unknown[],
  context: Outcome & { took: number; level?: 'error' },
): void {
  const logger = em.config.getLogger();
  const query = logger.isEnabled('query-params') ? em.getPlatform().formatQuery(sql, params) : sql;
  logger.logQuery({
    level: 'info',
    ...context,
    affected: context.affected ?? undefined,
    query,
    params,
    connection: { type: 'write' },
  });
}

/** The driver's error as MikroORM would have thrown it (a DriverException subclass, code and cause kept). */
function convert(em: EntityManager, error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  try {
    return em.getDriver().convertException(error);
  } catch {
    return error;
  }
}

/**
 * Whether the app's MikroORM configuration lets statements go around its
 * driver at all, decided once per ORM.  Not where the app gave an
 * onCreateConnection hook (a search_path, session variables): MikroORM runs it
 * on each connection when its own driver first takes it from the pool, and a
 * statement sent around that driver could reach a connection the hook has not
 * prepared yet.  Not where it gave an onQuery hook (a tracing comment, say),
 * which only connection.execute() calls.
 */
export function hooksAllowGoingAround(config: Configuration): boolean {
  return !config.get('onCreateConnection') && config.get('onQuery') === defaultOnQuery();
}

/** MikroORM's own onQuery, which leaves each SQL text as it is: the one a fresh Configuration holds. */
function defaultOnQuery(): unknown {
  return new Configuration({}, false).get('onQuery');
}

/**
 * Whether this request's statement may go around MikroORM's driver: not
 * inside its transaction (which runs on the connection MikroORM holds for it),
 * and not with a row-level-security session context (applied on MikroORM's own
 * checkout).
 */
export function mayGoAround(em: EntityManager): boolean {
  return !em.isInTransaction() && !em.getSessionContext();
}

/** The driver's client behind the EntityManager's write connection, from MikroORM's public getNativeClient(); null if none. */
export async function nativeClient(em: EntityManager): Promise<Record<string, unknown> | null> {
  try {
    const connection = em.getConnection('write') as { getNativeClient?: () => Promise<unknown> };
    if (typeof connection.getNativeClient !== 'function') return null;
    const client = await connection.getNativeClient();
    return typeof client === 'object' && client !== null ? (client as Record<string, unknown>) : null;
  } catch {
    // a connection that failed: MikroORM's path reports it
    return null;
  }
}
