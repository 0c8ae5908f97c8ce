import { createRequire } from 'node:module';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Context } from 'koa';
import WebSocket, { type WebSocketServer } from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { session } from '../../src/index.js';
import { SECRET, Session } from '../support/app.js';
import { databases } from '../support/databases.js';
import { integrationParts, listen, router, TIMEOUT_MS, type IntegrationApp } from './support.js';

/**
 * koa-websocket 7 with koa-mikro-session on both sides of one app, on every
 * database: `app.use(sessions)` for HTTP and `app.ws.use(sessions)` for the
 * WebSocket handshakes.  koa-websocket runs the ws middleware on
 * `app.createContext(req)` with no response: ctx.res and ctx.response.res are
 * undefined, so anything that touches headers (Vary, Set-Cookie, ctx.body,
 * ctx.status) throws there.  It also swallows a rejected ws middleware (only
 * `debug` logs it), so the first ws middleware here catches and records errors.
 * Proven: a ws handler reads the session of the cookie an HTTP request set,
 * writes to it (committed, no cookie), and a message handler that outlives the
 * handshake commits its change with `await ctx.session.save()`.
 */

/**
 * koa-websocket, loaded untyped: @types/koa-websocket augments Koa's Context
 * with a required `websocket`, which would make every other middleware of the
 * program fail to type-check.  The part of its API used here:
 */
type WsContext = Context & { websocket: WebSocket };
const websockify = createRequire(import.meta.url)('koa-websocket') as (app: Koa) => Koa & {
  ws: { use(middleware: (ctx: WsContext, next: () => Promise<unknown>) => unknown): void; server?: WebSocketServer };
};

/** A WebSocket client that hands out the JSON messages it receives in order, each within the timeout. */
class Socket {
  readonly #messages: unknown[] = [];
  readonly #waiters: ((message: unknown) => void)[] = [];

  private constructor(
    readonly ws: WebSocket,
    /** The headers of the handshake's 101 response. */
    readonly headers: Record<string, string | string[] | undefined>,
  ) {
    ws.on('message', (data) => {
      const message = JSON.parse(String(data));
      const waiter = this.#waiters.shift();
      if (waiter) waiter(message);
      else this.#messages.push(message);
    });
  }

  static open(url: string, cookie?: string): Promise<Socket> {
    const ws = new WebSocket(url, { headers: cookie ? { cookie } : {}, handshakeTimeout: TIMEOUT_MS });
    return new Promise((resolve, reject) => {
      ws.once('upgrade', (response) => resolve(new Socket(ws, response.headers)));
      ws.once('error', reject);
    });
  }

  /** The next message; fails if none arrives in time. */
  next(): Promise<any> {
    if (this.#messages.length) return Promise.resolve(this.#messages.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no WebSocket message within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      this.#waiters.push((message) => {
        clearTimeout(timer);
        resolve(message);
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}

/** Sends a JSON message on the request's socket (a ws route has no response body). */
function send(ctx: WsContext, message: unknown): undefined {
  ctx.websocket.send(JSON.stringify(message));
  return undefined;
}

for (const db of databases) {
  describe.skipIf(db.skip)(`koa-websocket on ${db.name}`, () => {
    let h: IntegrationApp;
    let wsUrl: string;
    const sockets: Socket[] = [];

    beforeAll(async () => {
      const orm = await db.init([Session]);
      const app = websockify(new Koa());
      const errors: unknown[] = [];
      app.on('error', (error) => errors.push(error));
      const sessions = session({ orm, entity: Session, secret: SECRET });

      app.use(sessions);
      app.use(bodyParser());
      app.use(
        router({
          'POST /name': (ctx) => {
            ctx.session.set('name', (ctx.request.body as { name: string }).name);
            return { id: ctx.session.id };
          },
          'GET /state': (ctx) => ({ id: ctx.session.id, data: Object.fromEntries(ctx.session.entries()) }),
        }),
      );

      // koa-websocket drops errors of ws middleware: record them, and tell the client how the chain ended.
      app.ws.use(async (ctx, next) => {
        try {
          await next();
          send(ctx, { done: true });
        } catch (error) {
          errors.push(error);
          send(ctx, { error: (error as Error).message });
        }
      });
      app.ws.use(sessions);
      const wsRoutes: Record<string, (ctx: WsContext) => void> = {
        '/ws/read': (ctx) =>
          send(ctx, { name: ctx.session.get('name') ?? null, id: ctx.session.isNew ? null : ctx.session.id }),
        '/ws/count': (ctx) => {
          const visits = ((ctx.session.get('wsVisits') as number | undefined) ?? 0) + 1;
          ctx.session.set('wsVisits', visits);
          send(ctx, { wsVisits: visits });
        },
        /** Each message is stored when it arrives, long after the handshake's middleware returned. */
        '/ws/chat': (ctx) => {
          ctx.websocket.on('message', async (data) => {
            try {
              ctx.session.set('lastMessage', String(data));
              await ctx.session.save();
              send(ctx, { saved: String(data) });
            } catch (error) {
              errors.push(error);
              send(ctx, { error: (error as Error).message });
            }
          });
        },
      };
      app.ws.use((ctx) => wsRoutes[ctx.path]?.(ctx));

      const server = await listen(app);
      wsUrl = server.url.replace(/^http/, 'ws');
      h = integrationParts(app, orm, server.url, errors, async () => {
        app.ws.server?.close();
        await server.close();
        await orm.close(true);
      });
    });
    afterAll(() => h?.close());
    afterEach(() => {
      for (const socket of sockets.splice(0)) socket.close();
      expect(h.errors).toEqual([]);
    });

    const open = async (path: string, cookie?: string) => {
      const socket = await Socket.open(wsUrl + path, cookie);
      sockets.push(socket);
      return socket;
    };
    const rows = () => h.orm.em.fork().count(Session, {});

    /** An HTTP client whose session holds a name, and the Cookie header a browser would send with its handshake. */
    async function visitor(name: string) {
      const client = h.client();
      const { id } = (await client.post('/name', { name })).json;
      return { client, id: id as string, cookie: `session=${await client.cookie()}` };
    }

    test('a ws handler reads the session of the cookie an HTTP request set, without error or cookie', async () => {
      const { id, cookie } = await visitor('alice');
      const socket = await open('/ws/read', cookie);
      expect(await socket.next()).toEqual({ name: 'alice', id });
      expect(await socket.next()).toEqual({ done: true });
      expect(socket.headers['set-cookie']).toBeUndefined();
      expect(socket.headers.vary).toBeUndefined();
    });

    test('what a ws handler writes is committed, and the HTTP side sees it', async () => {
      const { client, id, cookie } = await visitor('bob');
      for (const visits of [1, 2]) {
        const socket = await open('/ws/count', cookie);
        expect(await socket.next()).toEqual({ wsVisits: visits });
        expect(await socket.next()).toEqual({ done: true });
      }
      const state = await client.get('/state');
      expect(state.json).toEqual({ id, data: { name: 'bob', wsVisits: 2 } });
      expect(state.cookies).toEqual([]); // the cookie the browser has is still the one
      expect(await h.stored(id)).toEqual({ name: 'bob', wsVisits: 2 });
    });

    test('a ws connection without a cookie reads an empty session and stores nothing', async () => {
      const before = await rows();
      const socket = await open('/ws/read');
      expect(await socket.next()).toEqual({ name: null, id: null });
      expect(await socket.next()).toEqual({ done: true });
      expect(await rows()).toBe(before);
    });

    test('a message handler that outlives the handshake commits with ctx.session.save()', async () => {
      const { client, id, cookie } = await visitor('carol');
      const socket = await open('/ws/chat', cookie);
      expect(await socket.next()).toEqual({ done: true });
      for (const text of ['hello', 'again']) {
        socket.ws.send(text);
        expect(await socket.next()).toEqual({ saved: text });
        expect(await h.stored(id)).toEqual({ name: 'carol', lastMessage: text });
      }
      expect((await client.get('/state')).json.data).toEqual({ name: 'carol', lastMessage: 'again' });
    });
  });
}
