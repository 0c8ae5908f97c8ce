import type { Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import Koa, { type Context, type Middleware } from 'koa';
import type { MikroORM } from '@mikro-orm/core';
import { session, type SessionMiddleware, type SessionOptions } from '../../src/index.js';
import { SECRET, Session } from '../support/app.js';
import type { TestDatabase } from '../support/databases.js';
import { Client, serve, type Reply } from '../support/http.js';

/**
 * Shared pieces of the integration suites: a real Koa app with session() on a
 * real database, and a client whose every request gives up after a timeout,
 * so a middleware that never answers fails its test instead of freezing it.
 */
export const TIMEOUT_MS = 5000;

/** The test Client, with a timeout on every request and a form POST as a browser sends it. */
export class TimedClient extends Client {
  override request(path: string, init: RequestInit = {}): Promise<Reply> {
    return super.request(path, { signal: AbortSignal.timeout(TIMEOUT_MS), ...init });
  }

  /** An application/x-www-form-urlencoded POST. */
  form(path: string, fields: Record<string, string>, headers: Record<string, string> = {}): Promise<Reply> {
    return this.request(path, {
      method: 'POST',
      body: new URLSearchParams(fields).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    });
  }
}

/** A route of the small routers the suites use: its return value becomes the body (unless undefined). */
export type Route = (ctx: Context, next: () => Promise<unknown>) => unknown;

/** Dispatches `METHOD /path` to its route; other requests go on down the stack. */
export function router(routes: Record<string, Route>): Middleware {
  return async (ctx, next) => {
    const route = routes[`${ctx.method} ${ctx.path}`];
    if (!route) return next();
    const body = await route(ctx, next);
    if (body !== undefined) ctx.body = body;
  };
}

export interface IntegrationApp {
  app: Koa;
  orm: MikroORM;
  url: string;
  /** Server errors the app emitted ('error' events), not the 4xx a middleware answers on purpose. */
  errors: unknown[];
  client(): TimedClient;
  /** The stored data of the session row `id`, or null when there is no such row. */
  stored(id: string): Promise<Record<string, unknown> | null>;
  close(): Promise<void>;
}

export interface IntegrationOptions {
  options?: Partial<SessionOptions>;
  /** Installs what follows session(): the library under test and the routes. */
  setup(app: Koa, sessions: SessionMiddleware): void;
}

/** A Koa app: an error collector, session() over a fresh schema, then what `setup` adds. */
export async function integrationApp(
  db: TestDatabase,
  { options, setup }: IntegrationOptions,
): Promise<IntegrationApp> {
  const orm = await db.init([Session]);
  const app = new Koa();
  const errors: unknown[] = [];
  // A listener replaces Koa's default logging; the tests assert on what it collected.
  app.on('error', (error: { expose?: boolean }) => {
    if (!error?.expose) errors.push(error);
  });
  const sessions = session({ orm, entity: Session, secret: SECRET, ...options });
  app.use(sessions);
  setup(app, sessions);
  const server = await serve(app);
  return integrationParts(app, orm, server.url, errors, async () => {
    await server.close();
    await orm.close(true);
  });
}

/** The parts of IntegrationApp that don't depend on how the app is served. */
export function integrationParts(
  app: Koa,
  orm: MikroORM,
  url: string,
  errors: unknown[],
  close: () => Promise<void>,
): IntegrationApp {
  return {
    app,
    orm,
    url,
    errors,
    client: () => new TimedClient(url),
    async stored(id) {
      const row = await orm.em.fork().findOne(Session, { id });
      return row ? (row.data as Record<string, unknown>) : null;
    },
    close,
  };
}

/** Listens on a loopback port with app.listen() (koa-websocket attaches its server there). */
export async function listen(app: Koa): Promise<{ server: Server; url: string; close: () => Promise<void> }> {
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
