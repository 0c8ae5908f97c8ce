import type { EntityManager } from '@mikro-orm/core';
import { nativeClient } from './native-statements.js';
import type { PgSelect } from './pg-select.js';

/** What the library uses of pg-pool (public pg API): checkouts, and queries that check out by themselves. */
export interface PgPool {
  connect: (...args: unknown[]) => unknown;
  query(config: { name: string; text: string; values: unknown[] } | PgSelect): Promise<PgResult>;
}

export interface PgResult {
  rows: Record<string, unknown>[];
  rowCount: number | null;
}

/**
 * The pg pool behind the EntityManager's write connection, from MikroORM's
 * public getNativeClient(); null for anything that doesn't look like pg-pool
 * (SQLite, mysql2, a Kysely instance passed in driverOptions, a connection
 * that failed).
 */
export async function nativePgPool(em: EntityManager): Promise<PgPool | null> {
  const candidate = await nativeClient(em);
  const looksLikePgPool =
    typeof candidate?.connect === 'function' &&
    typeof candidate.query === 'function' &&
    typeof candidate.on === 'function' &&
    typeof candidate.totalCount === 'number' &&
    typeof candidate.idleCount === 'number';
  return looksLikePgPool ? (candidate as unknown as PgPool) : null;
}
