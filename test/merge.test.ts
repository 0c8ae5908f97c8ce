// Parallel requests of one browser that change different things of its
// session both commit: on a version conflict the later writer replays its own
// changes onto the row as the earlier one left it (src/merge.ts).  A request
// that read or changed what the other changed still gets 409: no lost update.
import { afterEach, describe, expect, test } from 'vitest';
import { defineSessionEntity, IdleTimeout, Userid } from '../src/index.js';
import { databases } from './support/databases.js';
import { Gate, harness, Item, type Harness, type Route } from './support/app.js';

const MergeSession = defineSessionEntity({
  name: 'MergeSession',
  tableName: 'merge_session',
  features: [Userid, IdleTimeout],
});

/** Routes that wait at the gate after they decided what to write, so several decide on the same row. */
function gatedRoutes(gate: (body: { gate?: string }) => Gate): Record<string, Route> {
  return {
    'POST /put': async (ctx, body) => {
      await gate(body).pass();
      ctx.session.set(body.key, body.value);
      return { ok: true };
    },
    'POST /increment': async (ctx, body) => {
      const count = (ctx.session.get(body.key) as number | undefined) ?? 0;
      await gate(body).pass();
      ctx.session.set(body.key, count + 1);
      return { ok: true };
    },
    'POST /read-a-write-b': async (ctx, body) => {
      const a = ctx.session.get('a');
      await gate(body).pass();
      ctx.session.set('b', `derived from ${String(a)}`);
      return { ok: true };
    },
    'POST /flash': async (ctx, body) => {
      await gate(body).pass();
      ctx.session.flash(body.message);
      return { ok: true };
    },
    'POST /pop': async (ctx, body) => {
      const messages = ctx.session.popFlash();
      await gate(body).pass();
      return { messages };
    },
    'POST /login': async (ctx, body) => {
      await gate(body).pass();
      ctx.session.userid = body.userid;
      return { ok: true };
    },
    'POST /put-with-item': async (ctx, body) => {
      ctx.em.persist(ctx.em.create(Item, { name: body.value }));
      await gate(body).pass();
      ctx.session.set(body.key, body.value);
      return { ok: true };
    },
    'POST /clear': async (ctx, body) => {
      await gate(body).pass();
      ctx.session.clear();
      return { ok: true };
    },
  };
}

for (const db of databases) {
  describe.skipIf(db.skip)(`merging parallel writes on ${db.name}`, () => {
    let h: Harness | undefined;
    let gate = new Gate();
    /** Per-request gates of ordered(): the request names its own. */
    let named: Record<string, Gate> = {};
    afterEach(async () => {
      gate.open();
      for (const each of Object.values(named)) each.open();
      await h?.close();
      h = undefined;
    });

    async function app(options = {}) {
      h = await harness(db, {
        entity: MergeSession,
        routes: gatedRoutes((body) => (body.gate ? named[body.gate] : gate)),
        options: { idleTimeout: 3600, ...options },
      });
      return h;
    }

    /** Sends the requests together, holds them at the gate until all arrived, then lets them commit. */
    async function together(requests: (() => Promise<{ status: number }>)[]) {
      gate = new Gate();
      const pending = requests.map((send) => send());
      await gate.reached(requests.length);
      gate.open();
      return Promise.all(pending);
    }

    /**
     * Both requests read the session and wait; then the first commits, and
     * only once it answered does the second go on: the second is the one that
     * finds the version changed.
     */
    async function ordered(
      first: (gate: string) => Promise<{ status: number }>,
      second: (gate: string) => Promise<{ status: number }>,
    ) {
      named = { first: new Gate(), second: new Gate() };
      const pending = [first('first'), second('second')];
      await Promise.all([named.first.reached(1), named.second.reached(1)]);
      named.first.open();
      const firstReply = await pending[0];
      named.second.open();
      return [firstReply, await pending[1]] as const;
    }

    const data = async (h: Harness, client: ReturnType<Harness['client']>) => (await client.get('/state')).json.data;

    test('8 parallel requests each writing its own key all commit, and every value is there', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { start: true });
      const replies = await together(
        Array.from({ length: 8 }, (_, i) => () => client.post('/put', { key: `k${i}`, value: i })),
      );
      expect(replies.map((reply) => reply.status)).toEqual(Array(8).fill(200));
      expect(await data(h, client)).toEqual({
        start: true,
        ...Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`k${i}`, i])),
      });
    });

    test('8 parallel read-modify-writes of one key: the final count equals the successes, and the rest get 409', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { n: 0 });
      const replies = await together(Array.from({ length: 8 }, () => () => client.post('/increment', { key: 'n' })));
      const successes = replies.filter((reply) => reply.status === 200).length;
      expect(replies.every((reply) => reply.status === 200 || reply.status === 409)).toBe(true);
      expect(successes).toBe(1);
      expect((await data(h, client)).n).toBe(1);
    });

    test('two writes of the same key with different values: one wins, the other gets 409', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { start: true });
      const replies = await together([
        () => client.post('/put', { key: 'x', value: 1 }),
        () => client.post('/put', { key: 'x', value: 2 }),
      ]);
      expect(replies.map((reply) => reply.status).sort()).toEqual([200, 409]);
    });

    test('a request that read a key the other changed gets 409, though it wrote another key', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { a: 'old' });
      const [first, second] = await ordered(
        (gate) => client.post('/put', { key: 'a', value: 'new', gate }),
        (gate) => client.post('/read-a-write-b', { gate }),
      );
      expect([first.status, second.status]).toEqual([200, 409]);
      // Never b derived from the old a beside the new a.
      expect(await data(h, client)).toEqual({ a: 'new' });
    });

    test('in the other order both stand, as if they had run one after the other', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { a: 'old' });
      const [first, second] = await ordered(
        (gate) => client.post('/read-a-write-b', { gate }),
        (gate) => client.post('/put', { key: 'a', value: 'new', gate }),
      );
      expect([first.status, second.status]).toEqual([200, 200]);
      expect(await data(h, client)).toEqual({ a: 'new', b: 'derived from old' });
    });

    test('flash messages queued in parallel are all kept, in the queue after each other', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { start: true });
      const replies = await together(
        ['one', 'two', 'three'].map((message) => () => client.post('/flash', { message })),
      );
      expect(replies.map((reply) => reply.status)).toEqual([200, 200, 200]);
      expect(((await client.get('/flash')).json.messages as string[]).sort()).toEqual(['one', 'three', 'two']);
    });

    test('popping a queue that another request added to meanwhile is a conflict: no message is lost', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { start: true });
      await client.post('/flash', { message: 'first' });
      const [added, popped] = await ordered(
        (gate) => client.post('/flash', { message: 'second', gate }),
        (gate) => client.post('/pop', { gate }),
      );
      expect([added.status, popped.status]).toEqual([200, 409]);
      expect((await client.get('/flash')).json.messages).toEqual(['first', 'second']);
    });

    test('a message added after another request popped the queue is kept for the next page', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { start: true });
      await client.post('/flash', { message: 'first' });
      const [popped, added] = await ordered(
        (gate) => client.post('/pop', { gate }),
        (gate) => client.post('/flash', { message: 'second', gate }),
      );
      expect([popped.status, added.status]).toEqual([200, 200]);
      expect((popped as unknown as { json: unknown }).json).toEqual({ messages: ['first'] });
      expect((await client.get('/flash')).json.messages).toEqual(['second']);
    });

    test('a login beside a data write: both stand, and the idle expiry both extended merges to the later one', async () => {
      const h = await app({ regenerateOnLogin: false });
      const client = h.client();
      await client.post('/set', { start: true });
      h.clock.advance(60);
      const replies = await together([
        () => client.post('/login', { userid: 5 }),
        () => client.post('/put', { key: 'cart', value: ['a'] }),
      ]);
      expect(replies.map((reply) => reply.status)).toEqual([200, 200]);
      const { id } = (await client.get('/state')).json;
      const row = (await h.orm.em.fork().findOneOrFail(MergeSession, { id })) as any;
      expect(row.userid.userid).toBe(5);
      expect(row.data).toEqual({ start: true, cart: ['a'] });
      expect(row.idle.idleExpire).toBe(Math.floor(h.clock.ms / 1000) + 3600);
    });

    test('a request that also changed app entities is not merged: 409 as before, its app rows rolled back', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { start: true });
      const replies = await together([
        () => client.post('/put', { key: 'x', value: 1 }),
        () => client.post('/put-with-item', { key: 'y', value: 'item-y' }),
      ]);
      const statuses = replies.map((reply) => reply.status);
      expect(statuses.sort()).toEqual([200, 409].sort());
      expect(await h.orm.em.fork().count(Item, { name: 'item-y' })).toBe(statuses[1] === 200 ? 1 : 0);
    });

    test('clear() after another request added a key is a conflict: clear() read every key', async () => {
      const h = await app();
      const client = h.client();
      await client.post('/set', { a: 1 });
      const [added, cleared] = await ordered(
        (gate) => client.post('/put', { key: 'b', value: 2, gate }),
        (gate) => client.post('/clear', { gate }),
      );
      expect([added.status, cleared.status]).toEqual([200, 409]);
      expect(await data(h, client)).toEqual({ a: 1, b: 2 });
    });

    test('in transaction mode nothing is merged: the second writer gets 409 as before', async () => {
      if (db.name === 'sqlite') return; // one connection: transaction-mode requests run one after the other there
      const h = await app({ transaction: true });
      const client = h.client();
      await client.post('/set', { start: true });
      const replies = await together([
        () => client.post('/put', { key: 'x', value: 1 }),
        () => client.post('/put', { key: 'y', value: 2 }),
      ]);
      expect(replies.map((reply) => reply.status).sort()).toEqual([200, 409]);
    });
  });
}
