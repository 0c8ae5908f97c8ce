/**
 * The end-of-request flush: no BEGIN/COMMIT when the session row is the only
 * thing it writes (one statement is atomic on its own), and MikroORM's own
 * transaction in every other case, so the app's data and the session still
 * commit or roll back together.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { defineEntity, p, type EventArgs, type EventSubscriber } from '@mikro-orm/core';
import { SessionBase } from '../src/index.js';
import { databases } from './support/databases.js';
import { flushingAfterCommit, harness, Item, Session, type Harness } from './support/app.js';

/** A hand-written session entity with a hook of its own: its writes must go through MikroORM, hook and all. */
const LabelledSession = defineEntity({
  name: 'LabelledSession',
  tableName: 'labelled_session',
  extends: SessionBase,
  properties: { label: p.string().nullable() },
  hooks: {
    beforeCreate: [({ entity }: EventArgs<any>) => void (entity.label = 'created by hook')],
  },
});

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();

for (const db of databases) {
  describe.skipIf(db.skip)(`the end-of-request flush on ${db.name}`, () => {
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    test('a write, a new session and a logout of the session alone: one statement each, no transaction', async () => {
      h = await harness(db, { routes: { 'POST /logout': (ctx) => (ctx.session.invalidate(), { ok: true }) } });
      const client = h.client();
      expect((await h.count(() => client.post('/set', { n: 1 }))).map(verb)).toEqual(['insert']);
      expect((await h.count(() => client.post('/set', { n: 2 }))).map(verb)).toEqual(['select', 'update']);
      expect((await client.get('/get?key=n')).json.value).toBe(2);
      expect((await h.count(() => client.post('/logout', {}))).map(verb)).toEqual(['select', 'delete']);
      expect(await h.orm.em.fork().count(Session, {})).toBe(0);
    });

    test("app entities and the session in one flush: MikroORM's transaction holds both", async () => {
      h = await harness(db);
      const client = h.client();
      await client.post('/set', { n: 1 });
      const sql = await h.count(() => client.post('/item', { name: 'book' }));
      const verbs = sql.map(verb);
      expect(verbs.slice(0, 2)).toEqual(['select', 'begin']);
      expect(verbs.at(-1)).toBe('commit');
      expect(verbs.slice(2, -1).sort()).toEqual(['insert', 'update']);
      expect(await h.orm.em.fork().count(Item, { name: 'book' })).toBe(1);
    });

    test("a change of app entities alone keeps MikroORM's transaction: only session rows are un-wrapped", async () => {
      h = await harness(db, {
        routes: {
          'POST /item-only': (ctx, body) => (ctx.em.persist(ctx.em.create(Item, { name: body.name })), { ok: true }),
        },
      });
      const client = h.client();
      await client.post('/set', { n: 1 });
      expect((await h.count(() => client.post('/item-only', { name: 'pen' }))).map(verb)).toEqual([
        'select',
        'begin',
        'insert',
        'commit',
      ]);
    });

    test('a flush the route makes itself keeps its transaction, and the session then writes alone', async () => {
      h = await harness(db, {
        routes: {
          'POST /flush-then-set': async (ctx, body) => {
            ctx.em.persist(ctx.em.create(Item, { name: body.name }));
            await ctx.em.flush();
            ctx.session.set('after', body.name);
            return { ok: true };
          },
        },
      });
      const client = h.client();
      await client.post('/set', { n: 1 });
      const sql = await h.count(() => client.post('/flush-then-set', { name: 'cup' }));
      expect(sql.map(verb)).toEqual(['select', 'begin', 'insert', 'commit', 'update']);
    });

    test('the autocommit context ends with the flush: a later flush of the request opens its own transaction', async () => {
      const seen: boolean[] = [];
      h = await harness(db, {
        outer: [
          async (ctx, next) => {
            await next();
            if (ctx.path !== '/set') return;
            seen.push(ctx.em.isInTransaction());
            ctx.em.persist(ctx.em.create(Item, { name: 'after-commit' }));
            await ctx.em.flush();
          },
        ],
      });
      const client = h.client();
      const sql = await h.count(() => client.post('/set', { n: 1 }));
      expect(seen).toEqual([false]);
      expect(sql.map(verb)).toEqual(['insert', 'begin', 'insert', 'commit']);
      expect(await h.orm.em.fork().count(Item, { name: 'after-commit' })).toBe(1);
    });

    test('after the session row was written alone, the fork holds it as clean: a later flush writes nothing', async () => {
      const later: string[][] = [];
      h = await harness(db, { outer: [flushingAfterCommit('/set', later, () => h)] });
      const client = h.client();
      expect((await h.count(() => client.post('/set', { n: 1 }))).map(verb)).toEqual(['insert']);
      expect((await h.count(() => client.post('/set', { n: 2 }))).map(verb)).toEqual(['select', 'update']);
      expect((await h.count(() => client.post('/set', { n: 3 }))).map(verb)).toEqual(['select', 'update']);
      expect(later).toEqual([[], [], []]);
      // The version the fork holds is the one stored: each write above found it, none was a conflict.
      const row = await h.orm.em.fork().findOneOrFail(Session, { id: (await client.get('/state')).json.id });
      expect(row).toMatchObject({ version: 3, data: { n: 3 } });
    });

    test("a subscriber to the session entity's events still sees every write of the row", async () => {
      const seen: string[] = [];
      const listener: EventSubscriber = {
        getSubscribedEntities: () => [Session],
        afterCreate: () => void seen.push('afterCreate'),
        afterUpdate: () => void seen.push('afterUpdate'),
        afterDelete: () => void seen.push('afterDelete'),
      };
      h = await harness(db, { routes: { 'POST /logout': (ctx) => (ctx.session.invalidate(), { ok: true }) } });
      h.orm.em.getEventManager().registerSubscriber(listener);
      const client = h.client();
      await client.post('/set', { n: 1 });
      await client.post('/set', { n: 2 });
      await client.post('/logout', {});
      expect(seen).toEqual(['afterCreate', 'afterUpdate', 'afterDelete']);
    });

    test('an onFlush subscriber registered after session() may add change sets: the flush keeps its transaction', async () => {
      h = await harness(db);
      const client = h.client();
      await client.post('/set', { n: 1 });
      let added = 0;
      h.orm.em.getEventManager().registerSubscriber({
        onFlush: ({ em, uow }) => {
          if (added++) return;
          uow.computeChangeSet(em.create(Item, { name: 'added in onFlush' }));
        },
      });
      const sql = await h.count(() => client.post('/set', { n: 2 }));
      const verbs = sql.map(verb);
      expect(verbs.slice(0, 2)).toEqual(['select', 'begin']);
      expect(verbs.at(-1)).toBe('commit');
      expect(verbs.slice(2, -1).sort()).toEqual(['insert', 'update']);
      expect(await h.orm.em.fork().count(Item, { name: 'added in onFlush' })).toBe(1);
    });

    test('a hand-written session entity with a hook of its own is written by MikroORM, hook included', async () => {
      h = await harness(db, { entity: LabelledSession });
      const client = h.client();
      expect((await h.count(() => client.post('/set', { n: 1 }))).map(verb)).toEqual(['insert']);
      const [row] = await h.orm.em.fork().find(LabelledSession, {});
      expect(row).toMatchObject({ label: 'created by hook', data: { n: 1 } });
      expect((await h.count(() => client.post('/set', { n: 2 }))).map(verb)).toEqual(['select', 'update']);
      expect(await h.orm.em.fork().findOneOrFail(LabelledSession, { id: row.id })).toMatchObject({
        version: 2,
        data: { n: 2 },
      });
    });

    test.skipIf(db.name !== 'postgresql')(
      'a row-level-security session context keeps the transaction that applies it',
      async () => {
        h = await harness(db, {
          options: { lazy: true },
          routes: {
            'POST /tenant-set': async (ctx, body) => {
              ctx.em.setSessionContext({ variables: { 'app.tenant': 'acme' } });
              await ctx.session.load();
              ctx.session.set('n', body.n);
              return { ok: true };
            },
          },
        });
        const client = h.client();
        await client.post('/lazy-set', { n: 0 });
        const sql = await h.count(() => client.post('/tenant-set', { n: 1 }));
        const verbs = sql.map(verb);
        // The load goes through findOne(), in a short transaction that sets the variables; so does the write.
        expect(verbs.filter((v) => v === 'begin')).toHaveLength(2);
        expect(verbs.filter((v) => v === 'commit')).toHaveLength(2);
        expect(sql.filter((s) => /set_config/.test(s))).toHaveLength(2);
        expect(verbs).toContain('update');
      },
    );
  });
}
