import { IsolationLevel } from '@mikro-orm/core';
import { afterEach, describe, expect, test } from 'vitest';
import { databases } from './support/databases.js';
import { harness, Item, Session, type Harness } from './support/app.js';

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();

for (const db of databases) {
  describe.skipIf(db.skip)(`loading and transaction modes on ${db.name}`, () => {
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    for (const transaction of [false, true]) {
      test(`an ORM with disableIdentityMap still saves the session, transaction: ${transaction}`, async () => {
        h = await harness(db, { orm: { disableIdentityMap: true }, options: { transaction } });
        const client = h.client();
        await client.post('/set', { n: 1 });
        const write = await h.count(() => client.post('/set', { n: 2 }));
        expect(write.map(verb).filter((v) => v === 'update')).toHaveLength(1);
        expect((await client.get('/get?key=n')).json.value).toBe(2);
        const id = (await client.get('/state')).json.id;
        expect(await h.orm.em.fork().findOne(Session, { id })).toMatchObject({ version: 2, data: { n: 2 } });
      });
    }

    test('lazy: a cookie and no load() costs zero statements', async () => {
      h = await harness(db, { options: { lazy: true } });
      const client = h.client();
      expect((await client.post('/lazy-set', { k: 'v' })).status).toBe(200);
      expect(await h.count(() => client.get('/noop'))).toEqual([]);
      const reply = await client.get('/noop');
      expect(reply.cookies).toEqual([]);
      expect(reply.headers.get('vary')).toBeNull();
    });

    test('lazy: load() reads the row once, however often it is awaited', async () => {
      h = await harness(db, { options: { lazy: true } });
      const client = h.client();
      await client.post('/lazy-set', { k: 'v' });
      const sql = await h.count(async () => {
        expect((await client.get('/lazy-twice')).json.value).toBe('v');
      });
      expect(sql.map(verb)).toEqual(['select']);
    });

    test('lazy: using the session before load() is a clear error, with or without a cookie', async () => {
      h = await harness(db, { options: { lazy: true } });
      const client = h.client();
      const first = await client.get('/try?key=k');
      expect(first.json).toEqual({
        error: 'SessionNotLoadedError',
        message: expect.stringMatching(/before the session was loaded.*await ctx\.session\.load\(\)/),
      });
      await client.post('/lazy-set', { k: 'v' });
      expect((await client.get('/try?key=k')).json.error).toBe('SessionNotLoadedError');
    });

    test('transaction mode: the whole request runs in one transaction', async () => {
      h = await harness(db, { options: { transaction: true } });
      const client = h.client();
      const insert = await h.count(() => client.post('/set', { n: 1 }));
      expect(insert.map(verb)).toEqual(['begin', 'insert', 'commit']);
      const read = await h.count(() => client.get('/get?key=n'));
      expect(read.map(verb)).toEqual(['begin', 'select', 'commit']);
    });

    test('transaction mode: rows the route flushed itself roll back with a later error', async () => {
      h = await harness(db, { options: { transaction: true }, routes: flushingRoutes });
      const client = h.client();
      expect((await client.post('/flush-then-fail', { name: 'tx-doomed' })).status).toBe(500);
      expect(await h.orm.em.fork().count(Item, { name: 'tx-doomed' })).toBe(0);
      expect(await h.orm.em.fork().count(Session, {})).toBe(0);
    });

    test('default mode: a flush the route makes itself commits on its own (documented)', async () => {
      h = await harness(db, { routes: flushingRoutes });
      const client = h.client();
      expect((await client.post('/flush-then-fail', { name: 'early' })).status).toBe(500);
      expect(await h.orm.em.fork().count(Item, { name: 'early' })).toBe(1);
      // The session change made after that flush is not written.
      expect(await h.orm.em.fork().count(Session, {})).toBe(0);
    });

    test.skipIf(db.name === 'sqlite')('transaction mode applies the chosen isolation level', async () => {
      h = await harness(db, { options: { transaction: { isolationLevel: IsolationLevel.SERIALIZABLE } } });
      const sql = await h.count(() => h!.client().get('/noop'));
      expect(sql.join('\n')).toMatch(/isolation level serializable/i);
    });

    test('orm.em inside a route is the request fork: its entities commit with the session', async () => {
      h = await harness(db, {
        routes: {
          'POST /global-em': (ctx, body) => {
            h!.orm.em.persist(h!.orm.em.create(Item, { name: body.name }));
            ctx.session.set('viaGlobal', true);
            if (body.fail) throw new Error('fail');
            return { same: h!.orm.em.getContext() === ctx.em };
          },
        },
      });
      const client = h.client();
      expect((await client.post('/global-em', { name: 'global', fail: true })).status).toBe(500);
      expect(await h.orm.em.fork().count(Item, { name: 'global' })).toBe(0);
      const ok = await client.post('/global-em', { name: 'global' });
      expect(ok.json).toEqual({ same: true });
      expect(await h.orm.em.fork().count(Item, { name: 'global' })).toBe(1);
    });

    test('emKey exposes the EntityManager under another name', async () => {
      h = await harness(db, {
        options: { emKey: 'db' },
        routes: { 'GET /em': (ctx) => ({ db: !!(ctx as any).db?.fork, em: 'em' in ctx }) },
      });
      expect((await h.client().get('/em')).json).toEqual({ db: true, em: false });
    });
  });
}

const flushingRoutes = {
  'POST /flush-then-fail': async (ctx: any, body: any) => {
    ctx.em.persist(ctx.em.create(Item, { name: body.name }));
    await ctx.em.flush();
    ctx.session.set('after', 'flush');
    throw new Error('failed after flushing');
  },
};
