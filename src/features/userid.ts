import { defineEntity, p, type EntityManager, type EntityName } from '@mikro-orm/core';
import type { SessionContext } from '../context.js';
import type { SessionRow } from '../types.js';
import { FeatureNotEnabledError } from '../errors.js';
import { registerFeature, type Feature } from './feature.js';

/**
 * User id: the logged-in user in its own indexed column, so an app can list
 * or revoke every session of a user.  Subclass it to change the column, e.g.
 * a UUID with an eagerly loaded relation to the app's User.
 */
export class Userid {
  userid: unknown = null;
}

defineEntity({
  class: Userid,
  embeddable: true,
  properties: { userid: p.integer().nullable().index() },
});

export const useridFeature: Feature = registerFeature({
  name: 'Userid',
  property: 'userid',
  embeddable: Userid,
  holdsData: (embedded: Userid) => embedded.userid !== null && embedded.userid !== undefined,
});

function property(context: SessionContext, api: string): string {
  const found = context.features.find(({ feature }) => feature === useridFeature);
  if (!found) throw new FeatureNotEnabledError('Userid', api);
  return found.property;
}

export function getUserid(context: SessionContext): unknown {
  const name = property(context, 'ctx.session.userid');
  context.use('userid');
  return (context.row as any)?.[name]?.userid ?? null;
}

/**
 * Setting a different non-null user (a login, or a switch of user) gives the
 * session a new id first (regenerateOnLogin, on by default): session fixation
 * is closed without the app having to remember it.  null forgets the user.
 */
export function setUserid(context: SessionContext, value: unknown): void {
  const name = property(context, 'ctx.session.userid');
  context.use('userid');
  const current = (context.row as any)?.[name]?.userid ?? null;
  if (value === undefined) value = null;
  if (value === current) return;
  if (value !== null && context.config.regenerateOnLogin && context.row && !context.isNew) context.regenerate();
  const row = context.row ?? context.createRow();
  (row as any)[name].userid = value;
  context.written = true;
}

/** One of a user's sessions, as listed for "your active sessions". */
export interface UserSessionInfo {
  id: string;
  /** Seconds since the epoch. */
  created: number;
  /** Seconds since the epoch of the last idle extension, or null without an idle timeout. */
  lastActivity: number | null;
  /** Seconds since the epoch, or null. */
  idleExpire: number | null;
  absoluteExpire: number | null;
  /** The earliest expiry, or null. */
  expiresAt: number | null;
}

interface Lookup {
  em: EntityManager;
  entity: EntityName<SessionRow>;
  property: string;
  idleProperty?: string;
  absoluteProperty?: string;
  /** The global idle timeout: last activity = idle expiry - the session's idle timeout. */
  idleTimeout: number | null;
}

export async function listUserSessions(lookup: Lookup, userid: unknown): Promise<UserSessionInfo[]> {
  const rows = await lookup.em.find(lookup.entity, { [lookup.property]: { userid } } as any, { orderBy: { created: 'desc' } as any });
  return rows.map((row: any) => {
    const idle = lookup.idleProperty ? row[lookup.idleProperty] : undefined;
    const idleExpire: number | null = idle?.idleExpire ?? null;
    const absoluteExpire: number | null = lookup.absoluteProperty ? (row[lookup.absoluteProperty]?.absoluteExpire ?? null) : null;
    const idleTimeout = idle?.idleTimeout ?? lookup.idleTimeout;
    const expiries = [idleExpire, absoluteExpire].filter((value): value is number => value !== null);
    return {
      id: row.id,
      created: row.created,
      lastActivity: idleExpire !== null && idleTimeout !== null ? idleExpire - idleTimeout : null,
      idleExpire,
      absoluteExpire,
      expiresAt: expiries.length ? Math.min(...expiries) : null,
    };
  });
}

function whereUser(lookup: Lookup, userid: unknown, except: readonly string[]): any {
  const where: Record<string, unknown> = { [lookup.property]: { userid } };
  if (except.length) where.id = { $nin: except };
  return where;
}

/**
 * Deletes every session of the user except those in `except`; returns the
 * deleted ids, for the session:destroyed events.  One statement where the
 * database can return what a DELETE deleted (PostgreSQL, SQLite ≥ 3.35 and
 * MariaDB ≥ 10.5 take RETURNING); elsewhere (MySQL) the ids are selected
 * first, in the same transaction when the caller has one.
 */
export async function revokeUserSessions(lookup: Lookup, userid: unknown, except: readonly string[] = []): Promise<string[]> {
  const em = lookup.em as SqlManager;
  const where = whereUser(lookup, userid, except);
  if (!returnsDeleted(em)) {
    const ids = (await em.find(lookup.entity, where, { fields: ['id'] as any })).map((row: SessionRow) => row.id);
    if (ids.length) await em.nativeDelete(lookup.entity, { id: { $in: ids } } as any);
    return ids;
  }
  const query = em.createQueryBuilder(lookup.entity).delete(where);
  const id = em.getPlatform().quoteIdentifier('id');
  const rows = await em.getConnection().execute<{ id: string }[]>(`${query.getQuery()} returning ${id}`, [...query.getParams()], 'all', em.getTransactionContext());
  return rows.map((row: { id: string }) => row.id);
}

/** What revoke uses of an SQL driver's EntityManager; every driver the library supports has it. */
type SqlManager = EntityManager & {
  createQueryBuilder(entity: EntityName<SessionRow>): { delete(where: unknown): { getQuery(): string; getParams(): readonly unknown[] } };
};

function returnsDeleted(em: EntityManager): boolean {
  return em.getPlatform().usesReturningStatement() || em.getDriver().constructor.name === 'MariaDbDriver';
}

export function countUserSessions(lookup: Lookup, userid: unknown, except: readonly string[] = []): Promise<number> {
  return lookup.em.count(lookup.entity, whereUser(lookup, userid, except));
}
