import { hash } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/core';
import { mayGoAround, sendLogged, type NativeStatements } from './native-statements.js';
import { nativePgPool, type PgPool, type PgResult } from './pg-pool.js';
import { PgSelect } from './pg-select.js';

/**
 * The session row's own SQL (statements.ts) as named prepared statements of
 * `pg`, the driver under @mikro-orm/postgresql.
 *
 * MikroORM's connection.execute() inlines the parameters into the SQL text and
 * sends it through Kysely and its logger: the app formats and escapes it, and
 * PostgreSQL parses and plans a new text on every request. A named statement
 * (`{ name, text, values }`) is parsed and planned once per connection and
 * sends its parameters apart (npm run bench:select: about 10 µs of app CPU
 * and 20 µs of PostgreSQL's per statement).
 *
 * Only where it is the same statement on the same connection MikroORM would
 * use: where the app's hooks allow (statements.ts) and mayGoAround() does
 * (outside a transaction, without a row-level-security session context), on
 * the write pool (the primary, with read replicas), and through the pool
 * MikroORM's public getNativeClient() returns, which must look like pg-pool.
 * Anywhere else the methods answer undefined, having sent nothing, and the
 * caller takes connection.execute(). Each statement still goes through
 * MikroORM's logger, so its debug output and the tests' statement counts see
 * it, and a driver error is converted as MikroORM converts its own. The
 * parameters are the values of MikroORM's own snapshot (JSON already a
 * string), which pg sends as text for PostgreSQL to read as the column's
 * type.
 */
export class PgStatements implements NativeStatements {
  /** pg's text (`$n` placeholders) and statement name, by MikroORM's text (`?`). */
  readonly #prepared = new Map<string, { text: string; name: string; generation: number }>();
  /** Bumped when PostgreSQL refuses a prepared plan after a schema change: the next names are prepared afresh. */
  #generation = 0;
  /** The write pool: a promise while it is looked up (once), null when there is none to use. */
  #pool: Promise<PgPool | null> | PgPool | null | undefined;

  /** A SELECT's rows, or undefined when this request must take MikroORM's path. */
  async select(em: EntityManager, sql: string, params: unknown[]): Promise<Record<string, unknown>[] | undefined> {
    let pool = this.#usable(em);
    if (pool instanceof Promise) pool = await pool;
    if (!pool) return undefined;
    try {
      return (await this.#sendSelect(em, pool, sql, params)).rows;
    } catch (error) {
      // 0A000 "cached plan must not change result type": a column was added or dropped since this
      // connection prepared it. MikroORM's path answers this request; the next prepares a new name.
      if ((error as { code?: unknown }).code === '0A000') {
        this.#generation++;
        return undefined;
      }
      throw error;
    }
  }

  /** An INSERT's, UPDATE's or DELETE's affected rows, or undefined (nothing sent) for MikroORM's path. */
  async write(em: EntityManager, sql: string, params: unknown[]): Promise<{ affectedRows: number } | undefined> {
    let pool = this.#usable(em);
    if (pool instanceof Promise) pool = await pool;
    if (!pool) return undefined;
    return { affectedRows: (await this.#send(em, pool, sql, params)).rowCount ?? 0 };
  }

  /** The pool to send on, or null; a promise only until the pool has been looked up (not awaited on every statement). */
  #usable(em: EntityManager): PgPool | null | Promise<PgPool | null> {
    if (!mayGoAround(em)) return null;
    if (this.#pool === undefined) this.#pool = nativePgPool(em).then((pool) => (this.#pool = pool));
    return this.#pool;
  }

  /** `query` sends the statement under its pg name and text; by default as pg's own Query. */
  #send(
    em: EntityManager,
    pool: PgPool,
    sql: string,
    params: unknown[],
    query = (name: string, text: string) => pool.query({ name, text, values: params }),
  ): Promise<PgResult> {
    const { name, text } = this.#statement(sql);
    return sendLogged(
      em,
      sql,
      params,
      () => query(name, text),
      (result) => ({ results: result.rows.length, affected: result.rowCount }),
    );
  }

  /** Whether PgSelect may be used: until it finds pg unlike what it was written for. */
  #describeOnce = true;

  /** The SELECT, described once per connection (pg-select.ts) where pg allows. */
  #sendSelect(em: EntityManager, pool: PgPool, sql: string, params: unknown[]): Promise<PgResult> {
    if (!this.#describeOnce || !params.every((param) => typeof param === 'string'))
      return this.#send(em, pool, sql, params);
    return this.#send(em, pool, sql, params, async (name, text) => {
      const select = new PgSelect(name, text, params as string[]);
      try {
        return await pool.query(select);
      } catch (error) {
        if (!select.refused) throw error;
        // Nothing was sent: pg's own Query sends it, now and from now on. (pg-pool drops the connection
        // that answered the refusal as failed: once per process.)
        this.#describeOnce = false;
        return pool.query({ name, text, values: params });
      }
    });
  }

  /** pg's text (`$n` placeholders) for MikroORM's text (`?`), under a name of the current generation. */
  #statement(sql: string): { text: string; name: string } {
    let prepared = this.#prepared.get(sql);
    if (prepared?.generation !== this.#generation) {
      let n = 0;
      const text = sql.replace(/\?/g, () => `$${++n}`);
      // A name per text (PostgreSQL keeps 63 bytes of it): two statements never share one.
      const name = `koa_mikro_session_${hash('sha256', text).slice(0, 16)}_${this.#generation}`;
      prepared = { text, name, generation: this.#generation };
      this.#prepared.set(sql, prepared);
    }
    return prepared;
  }
}
