/**
 * The session row's columns as plain data properties (entity.ts plainColumns()):
 * MikroORM's per-instance accessors are left out for the session entity's
 * scalars and embeddables only, and nothing a row does changes with them.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { defineEntity, p, type Collection, type MikroORM } from '@mikro-orm/core';
import type { Context } from 'koa';
import { AbsoluteTimeout, Csrf, defineSessionEntity, IdleTimeout, SessionBase, Userid, session } from '../src/index.js';
import { plainColumns } from '../src/entity.js';
import { databases } from './support/databases.js';
import { harness, SECRET, type Harness } from './support/app.js';

const Featured = defineSessionEntity({
  name: 'PlainFeatured',
  tableName: 'plain_featured',
  features: [Userid, Csrf, IdleTimeout, AbsoluteTimeout],
});
const COLUMNS = ['created', 'version', 'data', 'flash', 'userid', 'csrf', 'idle', 'absolute'];

/** An app's user, whose sessions the session entity links to from its side. */
const Owner = defineEntity({
  name: 'PlainOwner',
  properties: {
    id: p.integer().primary(),
    sessions: () => p.oneToMany(Linked).mappedBy('owner'),
  },
});
/** A hand-written session entity with a relation MikroORM propagates to its inverse side. */
const Linked = defineEntity({
  name: 'PlainLinked',
  tableName: 'plain_linked',
  extends: SessionBase,
  properties: {
    label: p.string().nullable(),
    owner: () => p.manyToOne(Owner).inversedBy('sessions').nullable(),
  },
});

/** How `object` holds each of `names`: an own data property, an own accessor, or not at all. */
function holding(object: object, names: string[]): Record<string, string> {
  const kinds: Record<string, string> = {};
  for (const name of names) {
    const descriptor = Object.getOwnPropertyDescriptor(object, name);
    kinds[name] = !descriptor ? 'none' : 'value' in descriptor ? 'data' : 'accessor';
  }
  return kinds;
}

const allData = (names: string[]) => Object.fromEntries(names.map((name) => [name, 'data']));

/** Outer middleware: after the session's commit, reports how its row holds `names`. */
function reportRow(entity: unknown, names: string[]) {
  return async (ctx: Context, next: () => Promise<void>) => {
    await next();
    if (ctx.path !== '/set' && ctx.path !== '/get') return;
    const row = await ctx.em.findOneOrFail(entity as any, { id: ctx.session.id });
    ctx.set('x-row', JSON.stringify(holding(row, names)));
  };
}

for (const db of databases) {
  describe.skipIf(db.skip)(`the session row's columns on ${db.name}`, () => {
    let h: Harness | undefined;
    let other: MikroORM | undefined;
    afterEach(async () => {
      await other?.close(true);
      await h?.close();
      h = other = undefined;
    });

    test('a new row and a loaded row hold every column as a plain data property, and are written as before', async () => {
      h = await harness(db, { entity: Featured, outer: [reportRow(Featured, COLUMNS)] });
      const client = h.client();
      const created = await client.post('/set', { n: 1 });
      expect(JSON.parse(created.headers.get('x-row')!)).toEqual(allData(COLUMNS));
      const loaded = await client.get('/get?key=n');
      expect(JSON.parse(loaded.headers.get('x-row')!)).toEqual(allData(COLUMNS));
      // The write finds its change with no accessor to record it: the diff is MikroORM's snapshot against the row.
      const sql = await h.count(() => client.post('/set', { n: 2 }));
      expect(sql.map((statement) => statement.split(' ')[0].toLowerCase())).toEqual(['select', 'update']);
      expect((await client.get('/get?key=n')).json.value).toBe(2);
    });

    test("a relation with an inverse side keeps MikroORM's accessors, and its assignment still propagates", async () => {
      h = await harness(db, {
        entity: Linked,
        entities: [Owner],
        routes: {
          'POST /link': async (ctx) => {
            const owner = await ctx.em.upsert(Owner, { id: 1 });
            await owner.sessions.init();
            const row: any = await ctx.em.findOneOrFail(Linked, { id: ctx.session.id });
            row.owner = owner;
            row.label = 'linked';
            const sessions = owner.sessions as unknown as Collection<object>;
            return { propagated: sessions.contains(row), holding: holding(row, ['owner', 'label', 'data']) };
          },
        },
      });
      const prototype = h.orm.getMetadata().get(Linked.meta.class).prototype;
      expect(Object.getOwnPropertyDescriptor(prototype, 'owner')?.set).toBeTypeOf('function');
      const client = h.client();
      await client.post('/set', { n: 1 });
      const linked = (await client.post('/link', {})).json;
      expect(linked).toEqual({ propagated: true, holding: { owner: 'accessor', label: 'data', data: 'data' } });
      const [stored] = await h.orm.em.fork().getConnection().execute('select label, owner_id from plain_linked');
      expect(stored).toEqual({ label: 'linked', owner_id: 1 });
    });

    test('an ORM with propagationOnPrototype: false has nothing to shadow, and its rows are written', async () => {
      h = await harness(db, {
        entity: Featured,
        orm: { propagationOnPrototype: false },
        outer: [reportRow(Featured, COLUMNS)],
      });
      expect(plainColumns(h.orm.getMetadata().get(Featured.meta.class))).toEqual([]);
      const client = h.client();
      await client.post('/set', { n: 1 });
      await client.post('/set', { n: 2 });
      const loaded = await client.get('/get?key=n');
      expect(loaded.json.value).toBe(2);
      expect(JSON.parse(loaded.headers.get('x-row')!)).toEqual(allData(COLUMNS));
    });

    test("another MikroORM.init() over the same classes puts MikroORM's setters back; rows are still written", async () => {
      h = await harness(db, { entity: Featured, outer: [reportRow(Featured, ['data', 'version'])] });
      const client = h.client();
      await client.post('/set', { n: 1 });
      // On SQLite in memory whatever this suite's database: a schema refresh here would drop the harness's table.
      other = await databases.find((candidate) => candidate.name === 'sqlite')!.init([Featured], []);
      // The second ORM decorated the same classes after session(): the rows are as MikroORM makes them again.
      const loaded = await client.post('/set', { n: 2 });
      expect(JSON.parse(loaded.headers.get('x-row')!)).toEqual({ data: 'accessor', version: 'accessor' });
      expect((await client.get('/get?key=n')).json.value).toBe(2);
      // A session() on that ORM shadows them again.
      session({ orm: other, entity: Featured, secret: SECRET });
      const again = await client.post('/set', { n: 3 });
      expect(JSON.parse(again.headers.get('x-row')!)).toEqual({ data: 'data', version: 'data' });
      expect((await client.get('/get?key=n')).json.value).toBe(3);
    });
  });
}

describe("plainColumns() leaves alone what is not MikroORM's setter", () => {
  test('an accessor pair, a getter, or a setter already shadowed', async () => {
    const db = databases.find((candidate) => candidate.name === 'sqlite')!;
    const orm = await db.init([Featured], []);
    try {
      const meta = orm.getMetadata().get(Featured.meta.class);
      const prototype = meta.prototype as object;
      // As a MikroORM that kept the value in a getter/setter pair on the prototype would have it.
      const pair = { get: () => 'kept', set: () => {}, configurable: true };
      Object.defineProperty(prototype, 'data', pair);
      Object.defineProperty(prototype, 'flash', { get: () => 'kept', configurable: true });
      const shadowed = plainColumns(meta);
      expect(shadowed).toEqual(['created', 'version', 'userid', 'csrf', 'idle', 'absolute']);
      expect(Object.getOwnPropertyDescriptor(prototype, 'data')).toMatchObject({ get: pair.get, set: pair.set });
      expect(Object.getOwnPropertyDescriptor(prototype, 'flash')?.get).toBeTypeOf('function');
      // Shadowed once, nothing left to shadow.
      expect(plainColumns(meta)).toEqual([]);
    } finally {
      await orm.close(true);
    }
  });
});
