// Connections that die under the app: terminated by an administrator or a
// failover while idle in the pool, while a request's transaction holds them,
// or while they run a statement.  Each must leave the pool: after many more
// deaths than the pool has connections, every request still gets an answer,
// and the pool holds only live connections.  On SQLite (one connection) the
// database can end the request's transaction itself; the connection must not
// stay locked.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import type { MikroORM } from '@mikro-orm/core';
import { databases } from './support/databases.js';
import { Gate, harness, Item, type Harness, type Route } from './support/app.js';
import { Backends } from './support/backends.js';
import { CONNECTIONS_WARNING } from '../src/connection-failures.js';
import type { Client, Reply } from './support/http.js';

/** Connections in the app's pool: small, so a leak exhausts it within a few deaths. */
const POOL = 2;
/** Deaths each phase of the storm causes: several times the pool. */
const DEATHS = 5 * POOL;
/**
 * Every request gives up after 5 s: a request waiting for a leaked connection fails the test instead of freezing it.
 */
const timeout = () => ({ signal: AbortSignal.timeout(5000) });

let gate = new Gate();
const routes: Record<string, Route> = {
  /** Writes an app row and the session, after waiting at the gate (inside the request's transaction, in that mode). */
  'POST /held': async (ctx, body) => {
    ctx.session.set('n', body.n);
    ctx.em.persist(ctx.em.create(Item, { name: `held-${body.n}` }));
    await gate.pass();
    return { ok: true };
  },
};

/**
 * A request that answered, or how it failed: a timeout is a request that waited for a connection that never came back.
 */
async function attempt(request: Promise<Reply>): Promise<number | string> {
  try {
    return (await request).status;
  } catch (error) {
    return `${(error as Error).name}: ${(error as Error).message}`;
  }
}

/** Live connections in the pool vs. what the pool counts, on pg-pool (public getters) or mysql2. */
async function poolState(orm: MikroORM): Promise<{ total: number; idle: number; waiting: number }> {
  const pool = (await orm.em.getConnection().getNativeClient()) as Record<string, any>;
  if (typeof pool.totalCount === 'number')
    return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount };
  // mysql2 has no public counters; its lists are what the pool holds.
  return {
    total: pool._allConnections.length,
    idle: pool._freeConnections.length,
    waiting: pool._connectionQueue.length,
  };
}

for (const db of databases) {
  if (db.name === 'sqlite') continue;
  for (const transaction of [false, true]) {
    describe.skipIf(db.skip)(`connections that die on ${db.name}, transaction: ${transaction}`, () => {
      const applicationName = `kms-connections-${randomUUID().slice(0, 8)}`;
      let h: Harness;
      let backends: Backends;
      beforeAll(async () => {
        backends = await Backends.open(db.name as 'postgresql' | 'mariadb');
        h = await harness(db, {
          routes,
          options: { transaction },
          orm: {
            pool: { min: 0, max: POOL },
            // PostgreSQL: the app's connections are found by this name; a connection that can't be had
            // within 3 s is an error (503), so a leak shows as failures rather than as a hung app.
            driverOptions:
              db.name === 'postgresql'
                ? { application_name: applicationName, connectionTimeoutMillis: 3000 }
                : { connectTimeout: 3000 },
          } as any,
        });
      });
      afterAll(async () => {
        await h?.close();
        await backends?.close();
      });

      test(`after ${DEATHS} connections died in requests' transactions and ${DEATHS} more at random, every request succeeds and the pool holds only live connections`, async () => {
        const started = Date.now();
        const statuses = new Map<number | string, number>();
        const count = (status: number | string) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
        const clients: Client[] = [];
        for (let i = 0; i < 4; i++) {
          const client = h.client();
          expect((await client.post('/set', { owner: i }, timeout())).status).toBe(200);
          clients.push(client);
        }
        let written = 0;

        // Phase 1: POOL requests wait at the gate, each holding its transaction (transaction mode) or with the
        // session loaded (default mode); the app's connections are terminated; the gate opens and the requests
        // commit on what is left.
        let held = 0;
        let rounds = 0;
        while (held < DEATHS && rounds < 40) {
          rounds++;
          gate = new Gate();
          const requests = clients.slice(0, POOL).map((client, n) => attempt(client.post('/held', { n }, timeout())));
          // Stops waiting when the requests ended without reaching the gate (a request that failed early, or hung).
          await Promise.race([gate.reached(POOL), Promise.all(requests)]);
          held += await backends.terminate(h.orm, applicationName);
          gate.open();
          for (const status of await Promise.all(requests)) {
            count(status);
            if (status === 200) written++;
          }
        }
        expect(held).toBeGreaterThanOrEqual(DEATHS);

        // Phase 2: four clients send requests one after the other while, after each answer, every connection the
        // app has is terminated, idle in the pool or not.
        let random = 0;
        let sent = 0;
        const worker = async (client: Client, index: number) => {
          while (random < DEATHS && sent < 400) {
            const writes = ++sent % 2 === 1;
            const status = await attempt(
              writes
                ? client.post('/item', { name: `storm-${index}-${sent}` }, timeout())
                : client.get('/get?key=owner', timeout()),
            );
            count(status);
            if (status === 200 && writes) written++;
            if (random < DEATHS) random += await backends.terminate(h.orm, applicationName);
          }
        };
        await Promise.all(clients.map(worker));
        expect(random).toBeGreaterThanOrEqual(DEATHS);

        // Requests of the storm answer 200, or 503 when the session's own load or commit lost its connection;
        // none waits until its timeout, none is a 500.
        expect([...statuses.keys()].filter((status) => status !== 200 && status !== 503)).toEqual([]);
        const storm = Date.now() - started;

        // The storm ends as a failover does: every connection the app has dies, and the server has closed them. The app
        // learns of it a moment later (a pooled client's socket closes): "afterwards" begins once the pool has let go
        // of every connection the server no longer has. (A request that took a dead one before that would rightly get
        // a 503.)
        await backends.terminate(h.orm, applicationName, { exited: true });
        await vi.waitFor(
          async () => expect((await poolState(h.orm)).total).toBe(await backends.count(h.orm, applicationName)),
          { timeout: 5000, interval: 10 },
        );

        // Afterwards every request succeeds: one after the other, then all at once (more than the pool).
        for (let i = 0; i < 10; i++) {
          const client = clients[i % clients.length];
          expect((await client.post('/item', { name: `after-${i}` }, timeout())).status).toBe(200);
          expect((await client.get('/get?key=owner', timeout())).json).toEqual({ value: i % clients.length });
        }
        written += 10;
        // (Each from a browser of its own: two parallel writes of one session may rightly conflict.)
        const parallel = await Promise.all(
          Array.from({ length: 10 }, (_, i) => attempt(h.client().post('/item', { name: `parallel-${i}` }, timeout()))),
        );
        expect(parallel).toEqual(Array(10).fill(200));
        written += 10;

        // Every 200 was written (a 503's commit may or may not have reached the server before its connection died).
        expect(await h.orm.em.fork().count(Item)).toBeGreaterThanOrEqual(written);

        // The pool holds only live connections, none of them checked out: what it counts is what the server has.
        const state = await poolState(h.orm);
        expect(state.waiting).toBe(0);
        expect(state.idle).toBe(state.total);
        expect(state.total).toBeGreaterThan(0);
        expect(state.total).toBeLessThanOrEqual(POOL);
        expect(await backends.count(h.orm, applicationName)).toBe(state.total);

        console.info(
          `[connections] ${db.name}, transaction: ${transaction}: pool ${POOL}, ${held} terminations in ${rounds} gated rounds + ` +
            `${random} in ${sent} storm requests; answers ${JSON.stringify(Object.fromEntries(statuses))}; ` +
            `storm ${storm} ms, total ${Date.now() - started} ms; pool afterwards ${JSON.stringify(state)}`,
        );
      });
    });
  }
}

const postgresql = databases.find((db) => db.name === 'postgresql')!;

describe.skipIf(postgresql.skip)('PostgreSQL: a pool the transaction does not take its connection from', () => {
  let h: Harness;
  const warnings: Error[] = [];
  const listen = (warning: Error) => warnings.push(warning);
  beforeAll(async () => {
    process.on('warning', listen);
    h = await harness(postgresql, { options: { transaction: true } });
    // As a Kysely that acquired connections some other way would: the library's recording never sees a checkout.
    const pool = (await h.orm.em.getConnection().getNativeClient()) as Record<string, unknown>;
    await h.client().get('/noop', timeout()); // the recording is set up by the first request at the latest
    expect(Object.hasOwn(pool, 'connect')).toBe(true);
    delete pool.connect;
  });
  afterAll(async () => {
    process.off('warning', listen);
    await h?.close();
  });

  test('requests work as with MikroORM alone, and a process warning says broken connections cannot be released', async () => {
    const client = h.client();
    for (let i = 0; i < 3; i++) expect((await client.post('/set', { i }, timeout())).status).toBe(200);
    expect((await client.get('/get?key=i', timeout())).json).toEqual({ value: 2 });
    await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on the next tick
    const ours = warnings.filter((warning) => (warning as Error & { code?: string }).code === CONNECTIONS_WARNING);
    expect(ours).toHaveLength(1);
    expect(ours[0].message).toMatch(/cannot be released by the library/);
  });
});

const sqlite = databases.find((db) => db.name === 'sqlite')!;

describe('SQLite: a transaction the database ended itself', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness(sqlite, {
      options: { transaction: true },
      routes: {
        // INSERT OR ROLLBACK: on a conflict SQLite rolls the whole transaction back and reports the error.
        'POST /conflict': async (ctx, body) => {
          ctx.session.set('tried', true);
          const insert = (name: string) =>
            ctx.em
              .getConnection()
              .execute(
                'insert or rollback into item (id, name) values (1, ?)',
                [name],
                'run',
                ctx.em.getTransactionContext(),
              );
          await insert('first');
          try {
            await insert('second');
          } catch (error) {
            if (body.rethrow) throw error;
          }
          return { ok: true };
        },
      },
    });
  });
  afterAll(() => h?.close());

  test.each([
    ['the route fails: ROLLBACK finds no transaction', true],
    ['the route goes on: COMMIT, then ROLLBACK, find no transaction', false],
  ])('%s; the request fails and the only connection is free for the next ones', async (_name, rethrow) => {
    const client = h.client();
    expect((await client.post('/conflict', { rethrow }, timeout())).status).toBe(500);
    // Nothing of the failed request was written, and the app answers again.
    expect(await h.orm.em.fork().count(Item)).toBe(0);
    expect((await client.post('/set', { after: 1 }, timeout())).status).toBe(200);
    expect((await client.get('/get?key=after', timeout())).json).toEqual({ value: 1 });
  });
});
