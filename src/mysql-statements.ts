import type { EntityManager } from '@mikro-orm/core';
import { mayGoAround, nativeClient, sendLogged, type NativeStatements, type Outcome } from './native-statements.js';

/** What the library uses of mysql2's (callback) pool, the driver under @mikro-orm/mariadb and @mikro-orm/mysql. */
interface MySqlPool {
  execute(sql: string, values: unknown[], callback: (error: Error | null, result: unknown) => void): unknown;
}

/** mysql2's answer to an INSERT, UPDATE or DELETE. */
interface ResultSetHeader {
  affectedRows: number;
}

/**
 * The session row's own SQL (statements.ts) as mysql2 prepared statements
 * (`pool.execute()`): each pooled connection has the server prepare a text
 * once and keeps it, and the values travel apart in the binary protocol.
 * MikroORM's connection.execute() formats them into a new text that the
 * server parses on every request (BENCHMARKS.md, fifth step).
 *
 * Only where it is the same statement on the same pool MikroORM would use:
 * where the app's hooks allow (statements.ts) and mayGoAround() does
 * (outside the request's transaction, which runs on the connection MikroORM
 * holds for it), with values mysql2 binds as MikroORM's text would carry them
 * (strings, finite numbers, null), and through the pool MikroORM's public
 * getNativeClient() returns, which must look like mysql2's.  Anywhere else the
 * methods answer undefined, having sent nothing.  Each statement goes through
 * MikroORM's logger, and a driver error comes out as MikroORM's exception.
 */
export class MySqlStatements implements NativeStatements {
  /** The pool: a promise while it is looked up (once), null when there is none to use. */
  #pool: Promise<MySqlPool | null> | MySqlPool | null | undefined;

  select(em: EntityManager, sql: string, params: unknown[]): Promise<Record<string, unknown>[] | undefined> {
    return this.#send<Record<string, unknown>[]>(em, sql, params, (rows) => ({ results: rows.length }));
  }

  async write(em: EntityManager, sql: string, params: unknown[]): Promise<{ affectedRows: number } | undefined> {
    const header = await this.#send<ResultSetHeader>(em, sql, params, ({ affectedRows }) => ({
      affected: affectedRows,
    }));
    return header && { affectedRows: header.affectedRows };
  }

  /** `sql` executed on the pool, logged; undefined, nothing sent, where MikroORM's path must run. */
  async #send<T>(
    em: EntityManager,
    sql: string,
    params: unknown[],
    outcome: (result: T) => Outcome,
  ): Promise<T | undefined> {
    const pool = await this.#usable(em, params);
    if (!pool) return undefined;
    return sendLogged(em, sql, params, () => execute<T>(pool, sql, params), outcome);
  }

  async #usable(em: EntityManager, params: unknown[]): Promise<MySqlPool | null> {
    if (!mayGoAround(em) || !params.every(bindable)) return null;
    if (this.#pool === undefined) this.#pool = nativeMySqlPool(em).then((pool) => (this.#pool = pool));
    return this.#pool;
  }
}

function execute<T>(pool: MySqlPool, sql: string, params: unknown[]): Promise<T> {
  return new Promise((resolve, reject) =>
    pool.execute(sql, params, (error, result) => (error ? reject(error) : resolve(result as T))),
  );
}

/** A value mysql2 binds as the text MikroORM formats would carry it. */
function bindable(value: unknown): boolean {
  return value === null || typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
}

/** mysql2's pool behind the EntityManager's connection; null for anything else (another driver, a changed MikroORM). */
async function nativeMySqlPool(em: EntityManager): Promise<MySqlPool | null> {
  const candidate = await nativeClient(em);
  const looksLikeMySql2Pool =
    typeof candidate?.execute === 'function' &&
    typeof candidate.getConnection === 'function' &&
    typeof candidate.releaseConnection === 'function' &&
    typeof (candidate.config as { connectionConfig?: unknown } | undefined)?.connectionConfig === 'object';
  return looksLikeMySql2Pool ? (candidate as unknown as MySqlPool) : null;
}
