import { RequestContext, type EntityManager } from '@mikro-orm/core';
import type Application from 'koa';
import type { Context, Middleware, Next } from 'koa';
import { resolveConfig, type SessionConfig, type SessionOptions } from './config.js';
import { beginTransaction, guardConnections } from './connection-failures.js';
import { SessionContext } from './context.js';
import { assertStorable, assertStorableKey } from './data.js';
import { plainColumns } from './entity.js';
import { SessionDataError, SessionError } from './errors.js';
import type { UserSessionInfo } from './features/index.js';
import { watchFlushes } from './flush.js';
import { GcSchedule } from './gc-schedule.js';
import { Session } from './session.js';
import type { EntityManagerContext } from './types.js';

/** The middleware, with the user-session functions of the entity it serves. */
export interface SessionMiddleware extends Middleware {
  /** A user's sessions, newest first (Userid feature). */
  listUserSessions(userid: unknown, em?: EntityManager): Promise<UserSessionInfo[]>;
  /** Deletes a user's sessions, except `except` (a session id); returns how many. */
  revokeUserSessions(userid: unknown, options?: { except?: string; em?: EntityManager }): Promise<number>;
  /** With gcInterval: runs a collection now (or waits for the one running). */
  collectGarbage(): Promise<void>;
  /** Stops the gcInterval schedule; call it when the app shuts down (before orm.close()). */
  close(): Promise<void>;
}

/**
 * The middleware: per request, fork an EntityManager, load the session, run
 * the route, then flush the route's entities and the session together.
 */
export function session(options: SessionOptions): SessionMiddleware {
  const config = resolveConfig(options);
  const { orm, emKey } = config;
  watchFlushes(orm);
  guardConnections(orm);
  plainColumns(config.model.meta);
  // MikroORM's request context forks the EntityManager and makes orm.em resolve
  // to that fork for everything the request awaits, routes included.
  // The app is known only once a request arrives; until then gc results have nowhere to go but the console.
  let app: Application | undefined;
  const schedule = startGc(config, () => app);
  // Inside a request, the request's EntityManager: a fork of its own would wait for the connection
  // the request's transaction holds (SQLite has one), and would not see the request's changes.
  const current = () => RequestContext.getEntityManager(orm.em.name) ?? orm.em.fork();
  const middleware: Middleware = (ctx, next) => {
    app ??= ctx.app;
    return RequestContext.create(orm.em, () => handle(ctx, next, RequestContext.getEntityManager(orm.em.name)!));
  };
  return Object.assign(middleware, {
    collectGarbage: async () => schedule?.run(),
    close: async () => schedule?.stop(),
    // async, so a missing Userid feature is a rejected promise rather than a synchronous throw.
    listUserSessions: async (userid: unknown, em: EntityManager = current()) => config.users.list(userid, em),
    revokeUserSessions: async (
      userid: unknown,
      { except, em = current() }: { except?: string; em?: EntityManager } = {},
    ) => (await config.users.revoke(userid, em, except ? [except] : [])).length,
  });

  async function handle(ctx: Context, next: Next, em: EntityManager): Promise<void> {
    (ctx as any)[emKey] = em;
    const context = new SessionContext(config, ctx, em);
    if (!Object.hasOwn(ctx.app.context, SESSION)) defineSessionProperty(ctx.app.context);
    (ctx as any)[SESSION] = new Session(context);
    try {
      if (config.transaction) await beginTransaction(em, config.transaction);
      await context.start();
      await next();
      await context.finish();
    } catch (error) {
      await context.abort(error);
      throw error;
    }
  }
}

function startGc(config: SessionConfig, app: () => Application | undefined): GcSchedule | undefined {
  const { settings, gcInterval: interval } = config;
  if (interval === null) return undefined;
  return new GcSchedule({
    orm: config.orm,
    entity: config.entity,
    idleTimeout: settings.idleTimeout,
    absoluteTimeout: settings.absoluteTimeout,
    interval,
    clock: config.clock,
    random: Math.random,
    onResult: (result) => app()?.emit('session:gc', result),
    onError: (error) => {
      const target = app();
      if (target && target.listenerCount('session:gc-error') > 0) target.emit('session:gc-error', error);
      else console.error('koa-mikro-session: garbage collection failed:', (error as Error)?.message ?? error);
    },
  });
}

/** Where a request's Session lives on ctx; `ctx.session` is an accessor over it. */
const SESSION = Symbol('koa-mikro-session');

/**
 * koa-session's `ctx.session = null` ends the session, and assigning an object
 * replaces its data: an accessor on the app's context prototype, defined once
 * per app (as koa-session defines its own), so a request pays nothing for it.
 */
function defineSessionProperty(prototype: object): void {
  Object.defineProperty(prototype, SESSION, { value: undefined, writable: true });
  Object.defineProperty(prototype, 'session', {
    configurable: true,
    get(this: Record<symbol, Session | undefined>) {
      return this[SESSION];
    },
    set(this: Record<symbol, Session | undefined>, value: unknown) {
      const current = this[SESSION];
      if (!current)
        throw new SessionError('ctx.session was assigned before the session() middleware ran for this request');
      if (value === current) return;
      if (value === null || value === undefined) return current.invalidate();
      if (typeof value !== 'object' || Array.isArray(value)) {
        throw new SessionDataError(
          'ctx.session can be set to null (ends the session) or to a plain object (replaces its data)',
        );
      }
      // Checked whole before anything changes: a refused value leaves the data as it was.
      const entries = Object.entries(value);
      for (const [key, item] of entries) {
        const where = `ctx.session = { ${JSON.stringify(key)}: ... }`;
        assertStorableKey(key, where);
        if (item !== undefined) assertStorable(item, where);
      }
      current.clear();
      for (const [key, item] of entries) current.set(key as never, item as never);
    },
  });
}

declare module 'koa' {
  // Inherited rather than declared: an app that still declares its own `em` on
  // ExtendableContext overrides it instead of clashing with it (TS2717).
  interface ExtendableContext extends EntityManagerContext {
    /** This request's session (koa-mikro-session). */
    get session(): Session;
    /** null ends the session (as invalidate()); a plain object replaces its data. */
    set session(value: Session | Record<string, unknown> | null | undefined);
  }
}
