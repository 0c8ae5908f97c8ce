import Koa, { type Context, type Middleware } from 'koa';
import { defineEntity, p, type EntityName, type MikroORM, type Options } from '@mikro-orm/core';
import {
  defineSessionEntity,
  generateSecretKey,
  session,
  type SessionMiddleware,
  type SessionOptions,
} from '../../src/index.js';
import type { TestDatabase } from './databases.js';
import { Client, serve } from './http.js';

/** An application entity, to prove the session commits and rolls back with it. */
export const Item = defineEntity({
  name: 'Item',
  properties: { id: p.integer().primary(), name: p.string() },
});

export const Session = defineSessionEntity();
export const SECRET = generateSecretKey();

/** A clock the tests move by hand: no sleeps. */
export class FakeClock {
  ms = Date.UTC(2026, 0, 1);
  readonly now = () => this.ms;
  advance(seconds: number): void {
    this.ms += seconds * 1000;
  }
}

/** A gate routes wait at, so a test can hold several requests in flight at once. */
export class Gate {
  #open!: () => void;
  readonly #opened = new Promise<void>((resolve) => (this.#open = resolve));
  #arrived = 0;
  #waiters: { count: number; resolve: () => void }[] = [];

  /** Called by a route: waits until the test opens the gate. */
  pass(): Promise<void> {
    this.#arrived++;
    for (const waiter of this.#waiters) if (this.#arrived >= waiter.count) waiter.resolve();
    return this.#opened;
  }

  /** Resolves once `count` requests wait at the gate. */
  reached(count: number): Promise<void> {
    if (this.#arrived >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }

  open(): void {
    this.#open();
  }
}

export type Route = (ctx: Context, body: any) => unknown;

/** Routes shared by the suites; each answers JSON. */
export const routes: Record<string, Route> = {
  'GET /noop': () => 'ok',
  'GET /get': (ctx) => ({ value: ctx.session.get(String(ctx.query.key)) ?? null }),
  'POST /set': (ctx, body) => {
    for (const [key, value] of Object.entries(body)) ctx.session.set(key, value);
    return { ok: true };
  },
  'POST /delete': (ctx, body) => ({ deleted: ctx.session.delete(body.key) }),
  'POST /clear': (ctx) => (ctx.session.clear(), { ok: true }),
  'GET /state': (ctx) => ({
    id: ctx.session.id,
    isNew: ctx.session.isNew,
    created: ctx.session.created,
    size: ctx.session.size,
    keys: ctx.session.keys(),
    data: Object.fromEntries(ctx.session.entries()),
  }),
  'POST /push': (ctx, body) => {
    (ctx.session.get('cart') as unknown[]).push(body.value);
    return { ok: true };
  },
  'POST /invalidate': (ctx) => (ctx.session.invalidate(), { ok: true }),
  'POST /invalidate-and-set': (ctx) => {
    ctx.session.invalidate();
    ctx.session.set('fresh', true);
    return { ok: true };
  },
  'POST /flash': (ctx, body) => (ctx.session.flash(body.message, body.options), { ok: true }),
  'GET /flash': (ctx) => ({ messages: ctx.session.popFlash(ctx.query.queue as string | undefined) }),
  'GET /peek': (ctx) => ({ messages: ctx.session.peekFlash(ctx.query.queue as string | undefined) }),
  'POST /item': async (ctx, body) => {
    ctx.em.persist(ctx.em.create(Item, { name: body.name }));
    ctx.session.set('lastItem', body.name);
    if (body.fail) throw new Error('the route failed after its writes');
    return { ok: true };
  },
  'POST /lazy-set': async (ctx, body) => {
    await ctx.session.load();
    for (const [key, value] of Object.entries(body)) ctx.session.set(key, value);
    return { ok: true };
  },
  'GET /lazy-twice': async (ctx) => {
    await Promise.all([ctx.session.load(), ctx.session.load()]);
    await ctx.session.load();
    return { value: ctx.session.get('k') ?? null };
  },
  'POST /set-bad': (ctx, body) => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const bad: Record<string, unknown> = {
      bigint: 1n,
      function: () => 1,
      circular,
      nan: Number.NaN,
      'nested-map': { inner: [1, new Map()] },
      symbol: Symbol('s'),
    };
    try {
      ctx.session.set('bad', bad[body.kind]);
      return { stored: true };
    } catch (error) {
      return { error: (error as Error).name, message: (error as Error).message };
    }
  },
  /** Reports the error a session call throws instead of failing the request. */
  'GET /try': (ctx) => {
    try {
      return { value: ctx.session.get(String(ctx.query.key)) ?? null };
    } catch (error) {
      return { error: (error as Error).name, message: (error as Error).message };
    }
  },
};

/**
 * Outer middleware: after the session's commit of each request to `path`,
 * flushes the request's fork again and records what that flush sent in
 * `later` (`harness` answers once the harness exists).
 */
export function flushingAfterCommit(path: string, later: string[][], harness: () => Harness | undefined): Middleware {
  return async (ctx, next) => {
    await next();
    if (ctx.path === path) later.push(await harness()!.count(() => ctx.em.flush()));
  };
}

export interface Harness {
  orm: MikroORM;
  /** Every statement the ORM sent, in order. */
  sql: string[];
  app: Koa;
  /** The session() middleware itself, with its listUserSessions() and revokeUserSessions(). */
  sessions: SessionMiddleware;
  url: string;
  clock: FakeClock;
  /** Events the app emitted, with their reason. */
  events: { name: string; reason?: string }[];
  client(): Client;
  /** Statements sent while `fn` ran. */
  count(fn: () => Promise<unknown>): Promise<string[]>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  options?: Partial<SessionOptions>;
  /** Changes to the ORM's options (pool size, driver options, a proxy's URL). */
  orm?: Partial<Options>;
  entity?: EntityName<any>;
  entities?: EntityName<any>[];
  routes?: Record<string, Route>;
  /** Middleware installed between session() and the routes, e.g. csrfProtection(). */
  middleware?: Middleware[];
  /** Middleware installed before session(): it sees the request after the session's commit. */
  outer?: Middleware[];
}

export async function harness(db: TestDatabase, config: HarnessOptions = {}): Promise<Harness> {
  const sql: string[] = [];
  const entity = config.entity ?? Session;
  const orm = await db.init([entity, Item, ...(config.entities ?? [])], sql, config.orm);
  const clock = new FakeClock();
  const app = new Koa();
  app.silent = true;
  const events: Harness['events'] = [];
  for (const name of ['session:invalid-cookie', 'session:crypto-error']) {
    app.on(name, (event: { reason?: string }) => events.push({ name, reason: event.reason }));
  }
  const sessions = session({ orm, entity, secret: SECRET, clock: clock.now, ...config.options });
  for (const middleware of config.outer ?? []) app.use(middleware);
  app.use(sessions);
  for (const middleware of config.middleware ?? []) app.use(middleware);
  const table = { ...routes, ...config.routes };
  app.use(async (ctx) => {
    const route = table[`${ctx.method} ${ctx.path}`];
    if (!route) ctx.throw(404);
    ctx.body = await route(ctx, await readJson(ctx));
  });
  const server = await serve(app);
  return {
    orm,
    sql,
    app,
    sessions,
    url: server.url,
    clock,
    events,
    client: () => new Client(server.url),
    async count(fn) {
      const start = sql.length;
      await fn();
      return sql.slice(start);
    },
    async close() {
      await server.close();
      await orm.close(true);
    },
  };
}

async function readJson(ctx: Context): Promise<unknown> {
  if (ctx.method === 'GET') return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}
