import { defineEntity, p, type EntityManager, type EntityName } from '@mikro-orm/core';
import type { SessionRow } from '../types.js';
import { defineFeature, type Expiry, type Feature, type FeatureContext } from './feature.js';

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

export const useridFeature: Feature<Userid> = defineFeature({
  name: 'Userid',
  property: 'userid',
  embeddable: Userid,
  holdsData: (embedded) => embedded.userid !== null && embedded.userid !== undefined,
});

const API = 'ctx.session.userid';

export function getUserid(context: FeatureContext): unknown {
  const embedded = context.part(useridFeature, API);
  context.use('userid');
  return embedded?.userid ?? null;
}

/**
 * Setting a different non-null user (a login, or a switch of user) gives the
 * session a new id first (regenerateOnLogin, on by default): session fixation
 * is closed without the app having to remember it.  null forgets the user.
 */
export function setUserid(context: FeatureContext, value: unknown): void {
  const current = getUserid(context);
  if (value === undefined) value = null;
  if (value === current) return;
  if (value !== null && context.regenerateOnLogin && context.row && !context.isNew) context.regenerate();
  if (!context.row) context.createRow();
  context.part(useridFeature, API)!.userid = value;
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

/**
 * A user's sessions, through one session entity's Userid column (the middleware's and ctx.session's listing and
 * revocation).
 */
export interface UserSessions {
  list(userid: unknown, em: EntityManager): Promise<UserSessionInfo[]>;
  /** The ids it deleted. */
  revoke(userid: unknown, em: EntityManager, except?: readonly string[]): Promise<string[]>;
  count(userid: unknown, em: EntityManager, except?: readonly string[]): Promise<number>;
}

/**
 * The user-session queries read from the primary, whatever preferReadReplicas
 * says: a lagging replica would miss the device that just logged in, and count
 * 0 sessions to revoke where there is one.
 */
const PRIMARY = 'write';

/** Where a session entity keeps its user id and its expiries. */
export interface UserSessionLookup {
  em: EntityManager;
  entity: EntityName<SessionRow>;
  /** The property embedding Userid. */
  property: string;
  /** The embedded timeout features: each one's property, expiry column, and global timeout (seconds or null). */
  timeouts: readonly { property: string; expiry: Expiry; timeout: number | null }[];
}

export async function listUserSessions(lookup: UserSessionLookup, userid: unknown): Promise<UserSessionInfo[]> {
  const rows = await lookup.em.find(lookup.entity, { [lookup.property]: { userid } } as any, {
    orderBy: { created: 'desc' } as any,
    connectionType: PRIMARY,
  });
  return rows.map((row) => {
    const info: UserSessionInfo = {
      id: row.id,
      created: row.created,
      lastActivity: null,
      idleExpire: null,
      absoluteExpire: null,
      expiresAt: null,
    };
    for (const { property, expiry, timeout } of lookup.timeouts) {
      const embedded = (row as unknown as Record<string, Record<string, number | null> | undefined>)[property];
      const at = embedded?.[expiry.column] ?? null;
      (info as unknown as Record<string, number | null>)[expiry.column] = at;
      if (at === null) continue;
      if (info.expiresAt === null || at < info.expiresAt) info.expiresAt = at;
      // A sliding expiry was set at the last activity: it is the expiry less the session's timeout.
      const own = embedded?.[expiry.setting] ?? timeout;
      if (expiry.slides && own !== null) info.lastActivity = at - own;
    }
    return info;
  });
}

function whereUser(lookup: UserSessionLookup, userid: unknown, except: readonly string[]): any {
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
export async function revokeUserSessions(
  lookup: UserSessionLookup,
  userid: unknown,
  except: readonly string[] = [],
): Promise<string[]> {
  const em = lookup.em as SqlManager;
  const where = whereUser(lookup, userid, except);
  if (!returnsDeleted(em)) {
    const found = await em.find(lookup.entity, where, { fields: ['id'] as any, connectionType: PRIMARY });
    const ids = found.map((row: SessionRow) => row.id);
    if (ids.length) await em.nativeDelete(lookup.entity, { id: { $in: ids } } as any);
    return ids;
  }
  const query = em.createQueryBuilder(lookup.entity).delete(where);
  const id = em.getPlatform().quoteIdentifier('id');
  const rows = await em
    .getConnection()
    .execute<{ id: string }[]>(
      `${query.getQuery()} returning ${id}`,
      [...query.getParams()],
      'all',
      em.getTransactionContext(),
    );
  return rows.map((row: { id: string }) => row.id);
}

/** What revoke uses of an SQL driver's EntityManager; every driver the library supports has it. */
type SqlManager = EntityManager & {
  createQueryBuilder(entity: EntityName<SessionRow>): {
    delete(where: unknown): { getQuery(): string; getParams(): readonly unknown[] };
  };
};

function returnsDeleted(em: EntityManager): boolean {
  return em.getPlatform().usesReturningStatement() || em.getDriver().constructor.name === 'MariaDbDriver';
}

export function countUserSessions(
  lookup: UserSessionLookup,
  userid: unknown,
  except: readonly string[] = [],
): Promise<number> {
  return lookup.em.count(lookup.entity, whereUser(lookup, userid, except), { connectionType: PRIMARY });
}
