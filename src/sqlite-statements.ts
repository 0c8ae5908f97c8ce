import type { EntityManager } from '@mikro-orm/core';
import { mayGoAround, nativeClient, sendLogged, type NativeStatements, type Outcome } from './native-statements.js';

/** What the library uses of better-sqlite3's Database, the driver under @mikro-orm/sqlite (its public API). */
interface SqliteDatabase {
  readonly open: boolean;
  readonly inTransaction: boolean;
  prepare(sql: string): SqliteStatement;
}

interface SqliteStatement {
  all(...params: unknown[]): Record<string, unknown>[];
  run(...params: unknown[]): { changes: number };
}

/**
 * The session row's own SQL (statements.ts) as better-sqlite3 statements,
 * prepared once per database and kept.
 *
 * MikroORM's connection.execute() formats the values into a new SQL text and
 * sends it through Kysely, and SQLite compiles that text again on every
 * request (BENCHMARKS.md, fifth step: a read costs half the instructions with
 * the statement kept, a write a quarter).
 *
 * SQLite has one connection, which Kysely lends to one caller at a time.
 * These statements run on it directly, so only where that is what MikroORM
 * would do with the same statement:
 * - where the app's hooks allow (statements.ts) and mayGoAround() does
 *   (outside the request's transaction);
 * - when no other request has a transaction open on the connection, which the
 *   statement would join (`inTransaction`, read with no await between it and
 *   the synchronous statement);
 * - with values better-sqlite3 binds as MikroORM's text would carry them
 *   (strings, numbers, bigints, null);
 * - on the database MikroORM's public getNativeClient() returned, while it is
 *   open.
 * Anywhere else the methods answer undefined, having sent nothing.  Each
 * statement goes through MikroORM's logger, and a driver error comes out as
 * MikroORM's exception.
 */
export class SqliteStatements implements NativeStatements {
  /** The database: a promise while it is looked up, null when there is none to use. */
  #database: Promise<SqliteDatabase | null> | SqliteDatabase | null | undefined;
  /** Statements of #database, by their SQL text. */
  readonly #prepared = new Map<string, SqliteStatement>();

  select(em: EntityManager, sql: string, params: unknown[]): Promise<Record<string, unknown>[] | undefined> {
    return this.#run(
      em,
      sql,
      params,
      (statement) => statement.all(...params),
      (rows) => ({ results: rows.length }),
    );
  }

  write(em: EntityManager, sql: string, params: unknown[]): Promise<{ affectedRows: number } | undefined> {
    return this.#run(
      em,
      sql,
      params,
      (statement) => ({ affectedRows: statement.run(...params).changes }),
      ({ affectedRows }) => ({ affected: affectedRows }),
    );
  }

  /** `run` on the kept statement for `sql`, logged; undefined, nothing run, where MikroORM's path must. */
  async #run<T>(
    em: EntityManager,
    sql: string,
    params: unknown[],
    run: (statement: SqliteStatement) => T,
    outcome: (result: T) => Outcome,
  ): Promise<T | undefined> {
    const database = await this.#usable(em, params);
    // No await between here and the statement: see the class comment.
    if (!database || database.inTransaction) return undefined;
    // Prepared inside the send, so that a failure to compile is logged and converted too.
    return sendLogged(em, sql, params, () => run(this.#statement(database, sql)), outcome);
  }

  /** The database to run on, or null for MikroORM's path. */
  async #usable(em: EntityManager, params: unknown[]): Promise<SqliteDatabase | null> {
    if (!mayGoAround(em) || !params.every(bindable)) return null;
    let database = this.#database;
    if (database === undefined)
      database = this.#database = nativeDatabase(em).then((found) => (this.#database = found));
    if (database instanceof Promise) database = await database;
    if (database && !database.open) {
      // Closed under us (orm.close(), a reconnect opens another): look it up again for the next request.
      this.#database = undefined;
      this.#prepared.clear();
      return null;
    }
    return database;
  }

  /** The kept statement for `sql`, prepared on first use. */
  #statement(database: SqliteDatabase, sql: string): SqliteStatement {
    let statement = this.#prepared.get(sql);
    if (statement === undefined) this.#prepared.set(sql, (statement = database.prepare(sql)));
    return statement;
  }
}

/** A value better-sqlite3 binds as the text MikroORM formats would carry it. */
function bindable(value: unknown): boolean {
  return value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint';
}

/** better-sqlite3's Database behind the EntityManager's connection; null for anything else (libsql, a changed MikroORM). */
async function nativeDatabase(em: EntityManager): Promise<SqliteDatabase | null> {
  const candidate = await nativeClient(em);
  const looksLikeBetterSqlite =
    typeof candidate?.prepare === 'function' &&
    typeof candidate.open === 'boolean' &&
    typeof candidate.inTransaction === 'boolean';
  return looksLikeBetterSqlite ? (candidate as unknown as SqliteDatabase) : null;
}
