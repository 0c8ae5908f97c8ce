import { hash } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/core';

/**
 * The session's primary-key SELECT as a named prepared statement of `pg`, the
 * driver under @mikro-orm/postgresql.
 *
 * MikroORM's connection.execute() inlines the parameters into the SQL text and
 * sends it through Kysely and its logger: the app formats and escapes it, and
 * PostgreSQL parses and plans a new text on every request. A named statement
 * (`{ name, text, values }`) is parsed and planned once per connection and
 * sends its parameter apart, which saves about 15–25 µs of app CPU per read
 * in bench:cpu, and the server's parse and plan.
 *
 * Only where it is the same statement on the same connection MikroORM would
 * use: outside a transaction (a transaction's statements must run on the
 * connection Kysely holds for it), without a row-level-security session
 * context (applied on MikroORM's own checkout), on the write pool (the
 * primary, with read replicas), and through the pool MikroORM's public
 * getNativeClient() returns, which must look like pg-pool. Anywhere else run()
 * answers undefined and the caller takes connection.execute(). The query
 * still goes through MikroORM's logger, so its debug output and the tests'
 * statement counts see it, and a driver error is converted as MikroORM
 * converts its own.
 */
export class PreparedSelect {
  /** MikroORM's text, `?` placeholders: what the logger shows, as for MikroORM's own statements. */
  readonly #logged: string;
  /** pg's text, `$n` placeholders. */
  readonly #text: string;
  readonly #name: string;
  /** Bumped when PostgreSQL refuses the prepared plan after a schema change: the next name is prepared afresh. */
  #generation = 0;
  /** The write pool: a promise while it is looked up (once), null when there is none to use. */
  #pool: Promise<PgPool | null> | PgPool | null | undefined;

  private constructor(logged: string, text: string, name: string) {
    this.#logged = logged;
    this.#text = text;
    this.#name = name;
  }

  /** `select` is MikroORM's text with `?` placeholders, for a PostgreSQL platform. */
  static for(select: string): PreparedSelect {
    let n = 0;
    const text = select.replace(/\?/g, () => `$${++n}`);
    // A name per text (at most 63 bytes): two session entities never share one.
    return new PreparedSelect(select, text, `koa_mikro_session_${hash('sha256', text).slice(0, 16)}`);
  }

  /** The rows, or undefined when this request must take MikroORM's path. */
  async run(em: EntityManager, id: string): Promise<Record<string, unknown>[] | undefined> {
    if (em.isInTransaction() || em.getSessionContext()) return undefined;
    const pool = this.#pool === undefined || this.#pool instanceof Promise ? await this.#lookUp(em) : this.#pool;
    if (!pool) return undefined;
    const logger = em.config.getLogger();
    const started = Date.now();
    try {
      const { rows } = await pool.query({ name: `${this.#name}_${this.#generation}`, text: this.#text, values: [id] });
      if (logger.isEnabled('query')) this.#log(em, id, { took: Date.now() - started, results: rows.length });
      return rows;
    } catch (error) {
      if (logger.isEnabled('query')) this.#log(em, id, { took: Date.now() - started, level: 'error' });
      // 0A000 "cached plan must not change result type": a column was added or dropped since this
      // connection prepared it. MikroORM's path answers this request; the next prepares a new name.
      if ((error as { code?: unknown }).code === '0A000') {
        this.#generation++;
        return undefined;
      }
      throw convert(em, error);
    }
  }

  #lookUp(em: EntityManager): Promise<PgPool | null> {
    if (!(this.#pool instanceof Promise)) {
      this.#pool = nativePool(em).then((pool) => (this.#pool = pool));
    }
    return this.#pool;
  }

  /** As MikroORM logs its own: the `?` text, with the values inlined under debug 'query-params'. */
  #log(em: EntityManager, id: string, context: { took: number; results?: number; level?: 'error' }): void {
    const logger = em.config.getLogger();
    const query = logger.isEnabled('query-params') ? em.getPlatform().formatQuery(this.#logged, [id]) : this.#logged;
    logger.logQuery({
      level: 'info',
      ...context,
      query,
      params: [id],
      connection: { type: 'write' },
    });
  }
}

/** What the fast path uses of pg-pool (public pg API). */
interface PgPool {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: Record<string, unknown>[] }>;
}

async function nativePool(em: EntityManager): Promise<PgPool | null> {
  try {
    const connection = em.getConnection('write') as { getNativeClient?: () => Promise<unknown> };
    if (typeof connection.getNativeClient !== 'function') return null;
    const pool = (await connection.getNativeClient()) as Record<string, unknown> | null;
    const looksLikePgPool =
      typeof pool === 'object' &&
      pool !== null &&
      typeof pool.query === 'function' &&
      typeof pool.connect === 'function' &&
      typeof pool.totalCount === 'number' &&
      typeof pool.idleCount === 'number';
    return looksLikePgPool ? (pool as unknown as PgPool) : null;
  } catch {
    return null; // no native client (a Kysely instance passed in driverOptions): MikroORM's path
  }
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
