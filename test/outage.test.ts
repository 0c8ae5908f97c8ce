// The database goes away and comes back.  The app reaches it through a TCP
// proxy of the test's own; stopping the proxy is the outage (new connections
// are refused, open ones are cut).  A request whose session can't be loaded
// or saved answers 503 (SessionStoreUnavailableError) promptly instead of
// 500 or a hang; the app's own errors stay its own; once the database is
// back, requests succeed again.  SQLite is a file in the app's process: it has
// no network to lose, so it has no such outage and is not tested here.
import type { Middleware } from 'koa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SessionError, SessionStoreUnavailableError } from '../src/index.js';
import { CLIENT_URLS, databases } from './support/databases.js';
import { Gate, harness, type Harness, type Route } from './support/app.js';
import { TcpProxy } from './support/backends.js';
import type { Client, Reply } from './support/http.js';

/** Every request gives up after 5 s, so one that hangs fails the test; an outage must be answered well within it. */
const timeout = () => ({ signal: AbortSignal.timeout(5000) });
/** The pool's size: the outage cuts more requests than this, so a connection each of them leaked would show. */
const POOL = 2;

let gate = new Gate();
const routes: Record<string, Route> = {
  /** The app's own query, after waiting at the gate. */
  'GET /app-query': async (ctx) => {
    ctx.session.get('anything');
    await gate.pass();
    const em = ctx.em as any;
    await em.getConnection().execute('select 1 as one', [], 'all', em.getTransactionContext());
    return { ok: true };
  },
};

/** What a request threw, seen by an error handler before Koa's. */
const thrown: unknown[] = [];
const recordErrors: Middleware = async (ctx, next) => {
  try {
    await next();
  } catch (error) {
    thrown.push(error);
    throw error;
  }
};

async function timed(request: Promise<Reply>): Promise<{ status: number; ms: number; error: unknown }> {
  const start = Date.now();
  const before = thrown.length;
  const reply = await request;
  return { status: reply.status, ms: Date.now() - start, error: thrown.length > before ? thrown.at(-1) : undefined };
}

function expectUnavailable(error: unknown): void {
  expect(error).toBeInstanceOf(SessionStoreUnavailableError);
  const unavailable = error as SessionStoreUnavailableError;
  expect(unavailable).toBeInstanceOf(SessionError);
  expect(unavailable.status).toBe(503);
  expect(unavailable.expose).toBe(false);
  expect(unavailable.message).toMatch(/database is unreachable.*nothing was saved/);
  // The driver's error, not one of ours.
  expect(unavailable.cause).toBeInstanceOf(Error);
  expect(unavailable.cause).not.toBeInstanceOf(SessionError);
}

for (const db of databases) {
  if (db.name === 'sqlite') continue;
  for (const transaction of [false, true]) {
    describe.skipIf(db.skip)(`the database goes away on ${db.name}, transaction: ${transaction}`, () => {
      const url = CLIENT_URLS[db.name as 'postgresql' | 'mariadb'];
      const proxy = TcpProxy.forUrl(url);
      let h: Harness;
      beforeAll(async () => {
        await proxy.start();
        h = await harness(db, {
          routes,
          outer: [recordErrors],
          options: { transaction },
          orm: {
            clientUrl: TcpProxy.url(url, proxy.port),
            pool: { min: 0, max: POOL },
            // A connection that can't be had within a second is an error, not a wait: the outage is answered promptly.
            driverOptions: db.name === 'postgresql' ? { connectionTimeoutMillis: 1000 } : { connectTimeout: 1000 },
          } as any,
        });
      });
      afterAll(async () => {
        await proxy.start();
        await h?.close();
        await proxy.stop();
      });

      test('a request that loads or saves its session answers 503 during the outage, and succeeds again once the database is back', async () => {
        const alice = h.client();
        expect((await alice.post('/set', { k: 'v' }, timeout())).status).toBe(200);

        await proxy.stop();
        // Loading an existing session.
        const load = await timed(alice.get('/get?key=k', timeout()));
        expect(load.status).toBe(503);
        expectUnavailable(load.error);
        // Saving a new one (in transaction mode its BEGIN fails first).
        const bob = h.client();
        const save = await timed(bob.post('/set', { b: 1 }, timeout()));
        expect(save.status).toBe(503);
        expectUnavailable(save.error);
        expect(save.error instanceof SessionStoreUnavailableError && save.error.message).toMatch(
          transaction ? /could not be loaded/ : /could not be saved/,
        );
        // A new visitor who stores nothing needs the database only in transaction mode.
        const visitor = await timed(h.client().get('/get?key=k', timeout()));
        expect(visitor.status).toBe(transaction ? 503 : 200);
        // More such requests than the pool has connections: none of them may keep one.
        const more = await Promise.all(
          Array.from({ length: 3 * POOL }, () => timed(alice.get('/get?key=k', timeout()))),
        );
        expect(more.map(({ status }) => status)).toEqual(Array(3 * POOL).fill(503));
        for (const { ms } of [load, save, ...more]) expect(ms).toBeLessThan(3000);
        // The 503s left the browser its cookie.
        expect(await alice.cookie()).toBeDefined();

        await proxy.start();
        let tries = 0;
        let reply: Reply | undefined;
        while (tries < 10 && reply?.status !== 200) {
          tries++;
          reply = await alice.get('/get?key=k', timeout());
        }
        expect(reply?.status).toBe(200);
        expect(reply?.json).toEqual({ value: 'v' });
        expect((await bob.post('/set', { b: 2 }, timeout())).status).toBe(200);
        expect((await bob.get('/get?key=b', timeout())).json).toEqual({ value: 2 });
      });

      test("the app's own query failing in the outage stays the app's error (500); its connections don't stay checked out", async () => {
        await proxy.start(); // (up already, unless the test before failed midway)
        // POOL requests get their session loaded (and, in transaction mode, hold their transaction's connection) first.
        gate = new Gate();
        const clients: Client[] = [];
        for (let i = 0; i < POOL; i++) {
          const client = h.client();
          expect((await client.post('/set', { i }, timeout())).status).toBe(200);
          clients.push(client);
        }
        const requests = clients.map((client) => timed(client.get('/app-query', timeout())));
        await gate.reached(POOL);
        await proxy.stop();
        gate.open();
        const replies = await Promise.all(requests);
        expect(replies.map(({ status }) => status)).toEqual(Array(POOL).fill(500));
        for (const { error } of replies) {
          expect(error).toBeInstanceOf(Error);
          expect(error).not.toBeInstanceOf(SessionError);
        }

        await proxy.start();
        let tries = 0;
        let status = 0;
        while (tries < 10 && status !== 200) {
          tries++;
          status = (await clients[0].get('/get?key=i', timeout())).status;
        }
        expect(status).toBe(200);
        // Every connection is usable again: as many requests at once as the pool holds, twice over.
        const after = await Promise.all(
          clients.flatMap((client) => [client.get('/get?key=i', timeout()), client.get('/get?key=i', timeout())]),
        );
        expect(after.map(({ status: code }) => code)).toEqual(Array(2 * POOL).fill(200));
      });
    });
  }
}
