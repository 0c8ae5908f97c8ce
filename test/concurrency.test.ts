import { IsolationLevel } from '@mikro-orm/core';
import { afterEach, describe, expect, test } from 'vitest';
import { databases } from './support/databases.js';
import { Gate, harness, Item, type Harness } from './support/app.js';

/**
 * No lost update: two requests of one browser read the same session, both
 * change it, both try to commit.  Exactly one wins; the other is answered 409
 * and writes nothing, neither its session change nor its app rows.
 */
const servers = databases.filter((db) => db.name !== 'sqlite');
const sqlite = databases.find((db) => db.name === 'sqlite')!;

const modes = [
  { name: 'default mode (optimistic lock)', options: {} },
  {
    name: 'transaction mode, read committed',
    options: { transaction: { isolationLevel: IsolationLevel.READ_COMMITTED } },
  },
  {
    name: 'transaction mode, repeatable read',
    options: { transaction: { isolationLevel: IsolationLevel.REPEATABLE_READ } },
  },
  { name: 'transaction mode, serializable', options: { transaction: { isolationLevel: IsolationLevel.SERIALIZABLE } } },
];

// SQLite has one connection: the default mode still detects the conflict.
for (const [db, mode] of [
  ...servers.flatMap((db) => modes.map((mode) => [db, mode] as const)),
  [sqlite, modes[0]] as const,
]) {
  {
    describe.skipIf(db.skip)(`concurrent writes on ${db.name}, ${mode.name}`, () => {
      let h: Harness | undefined;
      afterEach(async () => {
        await h?.close();
        h = undefined;
      });

      test('two parallel read-modify-write requests: one commits, one gets 409 and writes nothing', async () => {
        let gate = new Gate();
        h = await harness(db, {
          options: mode.options,
          routes: {
            'POST /increment': async (ctx, body) => {
              const count = (ctx.session.get('count') as number) ?? 0;
              ctx.em.persist(ctx.em.create(Item, { name: body.name }));
              await gate.pass();
              ctx.session.set('count', count + 1);
              return { count: count + 1 };
            },
          },
        });
        const client = h.client();
        await client.post('/set', { count: 0 });
        const first = gate;
        const requests = [client.post('/increment', { name: 'one' }), client.post('/increment', { name: 'two' })];
        await first.reached(2);
        first.open();
        const replies = await Promise.all(requests);
        gate = new Gate();
        gate.open();

        const statuses = replies.map((r) => r.status).sort();
        expect(statuses).toEqual([200, 409]);
        const loser = replies.find((r) => r.status === 409)!;
        expect(loser.text).toMatch(/changed by a concurrent request/);
        expect(loser.cookies).toEqual([]);
        expect((await client.get('/get?key=count')).json.value).toBe(1);
        // The loser's app row went with its session change.
        expect(await h.orm.em.fork().count(Item, { name: { $in: ['one', 'two'] } })).toBe(1);

        // A retry of the loser succeeds: nothing was half-written.
        const retry = await client.post('/increment', { name: 'three' });
        expect(retry.status).toBe(200);
        expect((await client.get('/get?key=count')).json.value).toBe(2);
      });

      test('many parallel increments: the final count equals the number of successes', async () => {
        const parallel = 8;
        const gate = new Gate();
        h = await harness(db, {
          options: mode.options,
          routes: {
            'POST /increment': async (ctx) => {
              const count = (ctx.session.get('count') as number) ?? 0;
              await gate.pass();
              ctx.session.set('count', count + 1);
              return { count: count + 1 };
            },
          },
        });
        const client = h.client();
        await client.post('/set', { count: 0 });
        const requests = Array.from({ length: parallel }, () => client.post('/increment'));
        await gate.reached(parallel);
        gate.open();
        const replies = await Promise.all(requests);
        const successes = replies.filter((r) => r.status === 200).length;
        expect(replies.every((r) => r.status === 200 || r.status === 409)).toBe(true);
        expect(successes).toBeGreaterThanOrEqual(1);
        expect((await client.get('/get?key=count')).json.value).toBe(successes);
      });
    });
  }
}

describe('transaction mode on sqlite', () => {
  test('requests are serialized by the single connection: all succeed and none is lost', async () => {
    const h = await harness(sqlite, {
      options: { transaction: true },
      routes: {
        'POST /increment': async (ctx) => {
          const count = (ctx.session.get('count') as number) ?? 0;
          await new Promise((resolve) => setImmediate(resolve));
          ctx.session.set('count', count + 1);
          return { count: count + 1 };
        },
      },
    });
    try {
      const client = h.client();
      await client.post('/set', { count: 0 });
      const replies = await Promise.all(Array.from({ length: 8 }, () => client.post('/increment')));
      expect(replies.map((r) => r.status)).toEqual(Array(8).fill(200));
      expect((await client.get('/get?key=count')).json.value).toBe(8);
    } finally {
      await h.close();
    }
  });
});
