/**
 * The fast end-of-request write relies on MikroORM internals (src/internals.ts).
 * A MikroORM whose internals differ must still get correct sessions, through
 * the public path: MikroORM's own flush in its own transaction.  Each test
 * breaks one internal on the real ORM, as a later 7.x release could, and
 * drives a real Koa app over HTTP.
 *
 * "At start-up" cases break the internal only while session() is created and
 * put it back before the first request: the requests run on an intact
 * MikroORM, so they can take the public path only because the check at
 * start-up chose it (and, once chosen, it stays).  "At run time" cases break
 * it only for one call the fast path makes after the route, as an internal
 * that exists but behaves differently would.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { defineSessionEntity, IdleTimeout } from '../src/index.js';
import { databases, type TestDatabase } from './support/databases.js';
import { flushingAfterCommit, harness, Item, Session, type Harness, type HarnessOptions } from './support/app.js';
import type { Client } from './support/http.js';
import type { MikroORM } from '@mikro-orm/core';

const IdleSession = defineSessionEntity({
  name: 'FallbackIdleSession',
  tableName: 'fallback_idle_session',
  features: [IdleTimeout],
});

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();
const verbs = (statements: string[]) => statements.map(verb);

/** The object on `start`'s prototype chain that defines `method`: where MikroORM keeps it. */
function ownerOf(start: object, method: string): object {
  for (let object: object | null = start; object; object = Object.getPrototypeOf(object)) {
    if (Object.hasOwn(object, method)) return object;
  }
  throw new Error(`${method} is not defined on ${start.constructor.name}: the test no longer matches this MikroORM`);
}

/** Puts `value` in place of `object[method]` (undefined: the method is missing); returns the undo. */
function replace(object: object, method: string, value: unknown): () => void {
  const own = Object.getOwnPropertyDescriptor(object, method);
  Object.defineProperty(object, method, { value, configurable: true, writable: true });
  return () => {
    if (own) Object.defineProperty(object, method, own);
    else delete (object as Record<string, unknown>)[method];
  };
}

/**
 * Replaces `object[method]` with a function that throws a TypeError the next
 * time it is called after arm(), once, and otherwise calls the original: the
 * ORM's own uses of the method keep working.
 */
function trap(object: object, method: string) {
  const original = (object as Record<string, (...args: unknown[]) => unknown>)[method];
  const state = { armed: false, thrown: 0, restore: () => {} };
  state.restore = replace(object, method, function (this: unknown, ...args: unknown[]) {
    if (state.armed) {
      state.armed = false;
      state.thrown++;
      throw new TypeError(`${method}: a changed internal`);
    }
    return original.apply(this, args);
  });
  return state;
}

/**
 * Warnings the process emitted about the internals while `fn` ran, and what
 * `fn` returned.  The other listeners (Node's printer among them) are detached
 * meanwhile: the warnings these tests cause on purpose are asserted, not printed.
 */
async function capturingWarnings<T>(fn: () => Promise<T>): Promise<{ result: T; warnings: string[] }> {
  const warnings: string[] = [];
  const others = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string }) => {
    if (warning.code === 'KOA_MIKRO_SESSION_INTERNALS') warnings.push(warning.message);
    else for (const other of others) other(warning);
  });
  try {
    const result = await fn();
    // process.emitWarning() dispatches on the next tick.
    await new Promise((resolve) => setImmediate(resolve));
    return { result, warnings };
  } finally {
    process.removeAllListeners('warning');
    for (const other of others) process.on('warning', other);
  }
}

/**
 * A harness whose ORM has `breakIt` applied between MikroORM.init() and
 * session(), undone once session() was created (before any request).
 */
async function startedWith(db: TestDatabase, breakIt: (orm: MikroORM) => () => void, config: HarnessOptions = {}) {
  let undo: (() => void) | undefined;
  const patched: TestDatabase = {
    ...db,
    async init(entities, sql) {
      const orm = await db.init(entities, sql);
      undo = breakIt(orm);
      return orm;
    },
  };
  try {
    return await capturingWarnings(() => harness(patched, config));
  } finally {
    undo?.();
  }
}

/** A fork's unit of work: per fork, so its methods are broken on the prototype. */
const unitOfWork = (orm: MikroORM) => orm.em.fork().getUnitOfWork();

const AT_START_UP: { name: string; breakIt: (orm: MikroORM) => () => void; says: string }[] = [
  {
    name: 'EntityComparator.prepareEntity',
    breakIt: (orm) => replace(orm.em.getComparator(), 'prepareEntity', undefined),
    says: 'EntityComparator.prepareEntity is missing',
  },
  {
    name: 'DatabaseDriver.mapDataToFieldNames',
    breakIt: (orm) => replace(orm.em.getDriver(), 'mapDataToFieldNames', undefined),
    says: 'DatabaseDriver.mapDataToFieldNames is missing',
  },
  {
    name: 'UnitOfWork.register',
    breakIt: (orm) => replace(ownerOf(unitOfWork(orm), 'register'), 'register', undefined),
    says: 'UnitOfWork.register is missing',
  },
  {
    name: 'EntityFactory.create',
    breakIt: (orm) => replace(ownerOf(orm.em.getEntityFactory(), 'create'), 'create', undefined),
    says: 'EntityFactory.create is missing',
  },
  {
    name: 'EntityManager.setTransactionContext',
    breakIt: (orm) => replace(ownerOf(orm.em, 'setTransactionContext'), 'setTransactionContext', undefined),
    says: 'EntityManager.setTransactionContext is missing',
  },
  {
    name: 'Connection.getClient',
    breakIt: (orm) => replace(orm.em.getConnection('write'), 'getClient', undefined),
    says: 'Connection.getClient is missing',
  },
];

for (const db of databases) {
  describe.skipIf(db.skip)(`fallbacks for MikroORM internals on ${db.name}`, () => {
    let h: Harness | undefined;
    const undo: (() => void)[] = [];
    afterEach(async () => {
      while (undo.length) undo.pop()!();
      await h?.close();
      h = undefined;
    });

    /** The row as the database holds it. */
    const stored = async (client: Client) =>
      h!.orm.em.fork().findOne(Session, { id: (await client.get('/state')).json.id });

    /**
     * Creates, writes, reads and deletes a session, and expects each write to
     * be MikroORM's flush in its own transaction; the read stays the one
     * prepared SELECT (public API only).
     */
    async function expectPublicPath(): Promise<void> {
      const client = h!.client();
      expect(verbs(await h!.count(() => client.post('/set', { n: 1 })))).toEqual(['begin', 'insert', 'commit']);
      expect(await client.cookie()).toBeTruthy();
      expect(verbs(await h!.count(() => client.post('/set', { n: 2 })))).toEqual([
        'select',
        'begin',
        'update',
        'commit',
      ]);
      const read = await h!.count(async () => expect((await client.get('/get?key=n')).json.value).toBe(2));
      expect(read).toHaveLength(1);
      expect(read[0]).toMatch(/^select \* from /);
      expect(await stored(client)).toMatchObject({ version: 2, data: { n: 2 } });
      const logout = await h!.count(async () =>
        expect((await client.post('/invalidate', {})).cookies.map((c) => c.value)).toEqual(['']),
      );
      expect(verbs(logout)).toEqual(['select', 'begin', 'delete', 'commit']);
      expect(await h!.orm.em.fork().count(Session, {})).toBe(0);
      expect((await client.get('/get?key=n')).json.value).toBeNull();
    }

    test('control: with every internal as expected, no warning and the fast writes (no BEGIN/COMMIT)', async () => {
      const { result, warnings } = await capturingWarnings(() => harness(db));
      h = result;
      expect(warnings).toEqual([]);
      const client = h.client();
      expect(verbs(await h.count(() => client.post('/set', { n: 1 })))).toEqual(['insert']);
      expect(verbs(await h.count(() => client.post('/set', { n: 2 })))).toEqual(['select', 'update']);
      expect(verbs(await h.count(() => client.post('/invalidate', {})))).toEqual(['select', 'delete']);
    });

    for (const { name, breakIt, says } of AT_START_UP) {
      test(`${name} missing at start-up: a warning names it, and sessions are created, written, read and deleted by MikroORM's flush`, async () => {
        const { result, warnings } = await startedWith(db, breakIt);
        h = result;
        expect(warnings).toHaveLength(1);
        expect(warnings[0]).toContain(says);
        await expectPublicPath();
      });
    }

    describe("the SELECT's row", () => {
      /** Counts the calls of em.map() (on every EntityManager) until undone; the calls still map. */
      function countMaps(): { calls: number } {
        const owner = ownerOf(h!.orm.em, 'map');
        const original = (owner as Record<string, (...args: unknown[]) => unknown>).map;
        const counter = { calls: 0 };
        undo.push(
          replace(owner, 'map', function (this: unknown, ...args: unknown[]) {
            counter.calls++;
            return original.apply(this, args);
          }),
        );
        return counter;
      }

      test('with every internal as expected it is made an entity by the entity factory, as findOne() does, not by em.map()', async () => {
        h = await harness(db);
        const client = h.client();
        await client.post('/set', { n: 1 });
        const maps = countMaps();
        expect((await client.get('/get?key=n')).json.value).toBe(1);
        expect(verbs(await h.count(() => client.post('/set', { n: 2 })))).toEqual(['select', 'update']);
        expect(maps.calls).toBe(0);
        expect(await stored(client)).toMatchObject({ version: 2, data: { n: 2 } });
      });

      test('EntityFactory.create missing at start-up: em.map() makes it, and it is the managed row the write updates', async () => {
        const { result, warnings } = await startedWith(db, (orm) =>
          replace(ownerOf(orm.em.getEntityFactory(), 'create'), 'create', undefined),
        );
        h = result;
        expect(warnings).toEqual([expect.stringContaining('EntityFactory.create is missing')]);
        const client = h.client();
        await client.post('/set', { n: 1 });
        const maps = countMaps();
        expect((await client.get('/get?key=n')).json.value).toBe(1);
        expect(maps.calls).toBe(1);
        expect(verbs(await h.count(() => client.post('/set', { n: 2 })))).toEqual([
          'select',
          'begin',
          'update',
          'commit',
        ]);
        expect(maps.calls).toBe(2);
        expect(await stored(client)).toMatchObject({ version: 2, data: { n: 2 } });
      });
    });

    test('DatabaseDriver.mapDataToFieldNames with another parameter list, for the whole test: the public path', async () => {
      let restore: (() => void) | undefined;
      const { result, warnings } = await startedWith(db, (orm) => {
        const driver = orm.em.getDriver() as unknown as Record<string, (...args: unknown[]) => unknown>;
        const original = driver.mapDataToFieldNames;
        // Two declared parameters, as if a release took (data, options); it still works for MikroORM's own calls.
        restore = replace(driver, 'mapDataToFieldNames', function (this: unknown, data: unknown, options: unknown) {
          return original.apply(this, [data, options, ...[...arguments].slice(2)]);
        });
        return () => {};
      });
      undo.push(() => restore?.());
      h = result;
      expect(warnings).toEqual([
        expect.stringContaining('DatabaseDriver.mapDataToFieldNames takes 2 parameters, not 5'),
      ]);
      await expectPublicPath();
    });

    test("a TypeError from prepareEntity on the fast path, nothing sent yet: the new session goes to MikroORM's flush", async () => {
      h = await harness(db, {
        routes: {
          'POST /set-armed': (ctx, body) => (ctx.session.set('n', body.n), (prepare.armed = true), { ok: true }),
        },
      });
      const prepare = trap(h.orm.em.getComparator(), 'prepareEntity');
      undo.push(prepare.restore);
      const client = h.client();
      expect(verbs(await h.count(() => client.post('/set-armed', { n: 1 })))).toEqual(['begin', 'insert', 'commit']);
      expect(prepare.thrown).toBe(1);
      expect((await client.get('/get?key=n')).json.value).toBe(1);
      // The fallback was for that request only: the next write takes the fast path again.
      expect(verbs(await h.count(() => client.post('/set', { n: 2 })))).toEqual(['select', 'update']);
      expect(await stored(client)).toMatchObject({ version: 2, data: { n: 2 } });
    });

    test('a TypeError from the entity comparator on an update, nothing sent yet: one UPDATE by MikroORM, the version bumped once', async () => {
      h = await harness(db, {
        routes: { 'POST /set-armed': (ctx, body) => (ctx.session.set('n', body.n), (map.armed = true), { ok: true }) },
      });
      // The UPDATE's changes come from the comparator; its columns are then looked up (statements.ts columnValues()).
      const map = trap(h.orm.em.getComparator(), 'getEntityComparator');
      undo.push(map.restore);
      const client = h.client();
      await client.post('/set', { n: 1 });
      expect(verbs(await h.count(() => client.post('/set-armed', { n: 2 })))).toEqual([
        'select',
        'begin',
        'update',
        'commit',
      ]);
      expect(map.thrown).toBe(1);
      expect(await stored(client)).toMatchObject({ version: 2, data: { n: 2 } });
      // The fork's row and the database agree: the next write (fast) finds the version it expects.
      expect(verbs(await h.count(() => client.post('/set', { n: 3 })))).toEqual(['select', 'update']);
      expect(await stored(client)).toMatchObject({ version: 3, data: { n: 3 } });
    });

    test('a TypeError from register after the INSERT was sent is not retried: the row is written once', async () => {
      h = await harness(db, {
        routes: {
          'POST /set-armed': (ctx, body) => (ctx.session.set('n', body.n), (register.armed = true), { ok: true }),
        },
      });
      const register = trap(ownerOf(unitOfWork(h.orm), 'register'), 'register');
      undo.push(register.restore);
      const client = h.client();
      let reply: Awaited<ReturnType<Client['post']>> | undefined;
      const sql = await h.count(async () => (reply = await client.post('/set-armed', { n: 1 })));
      expect(register.thrown).toBe(1);
      // A retry through MikroORM's flush would send a second INSERT of the same row.
      expect(verbs(sql)).toEqual(['insert']);
      expect(reply!.status).toBe(500);
      expect(await h.orm.em.fork().count(Session, {})).toBe(1);
    });

    test("after an UPDATE the snapshot is MikroORM's field; where getOriginalEntityData() answers another object, register() keeps it", async () => {
      const later: string[][] = [];
      h = await harness(db, { outer: [flushingAfterCommit('/set', later, () => h)] });
      const owner = ownerOf(unitOfWork(h.orm), 'register');
      const register = (owner as Record<string, (...args: unknown[]) => unknown>).register;
      let registered = 0;
      undo.push(
        replace(owner, 'register', function (this: unknown, ...args: unknown[]) {
          registered++;
          return register.apply(this, args);
        }),
      );
      const client = h.client();
      await client.post('/set', { n: 1 });
      const writes = async (n: number) => {
        const before = registered;
        expect(verbs(await h!.count(() => client.post('/set', { n })))).toEqual(['select', 'update']);
        return registered - before;
      };
      // The loaded row is registered by the entity factory; the UPDATE's new snapshot is assigned, not registered.
      const control = await writes(2);
      // As a MikroORM that keeps the snapshot elsewhere: what getOriginalEntityData() answers is never the object
      // assigned to the field.
      const keeper = ownerOf(unitOfWork(h.orm), 'getOriginalEntityData');
      const getOriginal = (keeper as Record<string, (...args: unknown[]) => unknown>).getOriginalEntityData;
      undo.push(
        replace(keeper, 'getOriginalEntityData', function (this: unknown, ...args: unknown[]) {
          const data = getOriginal.apply(this, args) as object | undefined;
          return data && { ...data };
        }),
      );
      expect(await writes(3)).toBe(control + 1);
      // Either way the fork holds the row as written: the later flush sends nothing, and the version is the stored one.
      expect(later).toEqual([[], [], []]);
      expect(await stored(client)).toMatchObject({ version: 3, data: { n: 3 } });
    });

    test('a TypeError in the onFlush step, before the flush sends anything: MikroORM keeps its transaction', async () => {
      h = await harness(db, {
        routes: {
          // The fork holds an app entity too, so the session's change is a flush of its own (path 2).
          'POST /load-and-set': async (ctx, body) => {
            await ctx.em.findOne(Item, { name: 'book' });
            ctx.session.set('n', body.n);
            if (body.arm) updates.armed = true;
            return { ok: true };
          },
        },
      });
      const updates = trap(ownerOf(unitOfWork(h.orm), 'getCollectionUpdates'), 'getCollectionUpdates');
      undo.push(updates.restore);
      await h.orm.em
        .fork()
        .persist(h.orm.em.create(Item, { name: 'book' }))
        .flush();
      const client = h.client();
      await client.post('/set', { n: 0 });
      // Control: the same request without the TypeError is one UPDATE without a transaction.
      expect(verbs(await h.count(() => client.post('/load-and-set', { n: 1 })))).toEqual([
        'select',
        'select',
        'update',
      ]);
      expect(verbs(await h.count(() => client.post('/load-and-set', { n: 2, arm: true })))).toEqual([
        'select',
        'select',
        'begin',
        'update',
        'commit',
      ]);
      expect(updates.thrown).toBe(1);
      expect(await stored(client)).toMatchObject({ version: 3, data: { n: 2 } });
    });

    test('if MikroORM stopped restoring the transaction context after a flush, a later flush of the request still opens its own', async () => {
      const seen: boolean[] = [];
      h = await harness(db, {
        routes: {
          'POST /load-and-set': async (ctx, body) => {
            await ctx.em.findOne(Item, { name: 'book' });
            ctx.session.set('n', body.n);
            return { ok: true };
          },
        },
        outer: [
          async (ctx, next) => {
            await next();
            if (ctx.path !== '/load-and-set') return;
            seen.push(ctx.em.isInTransaction());
            ctx.em.persist(ctx.em.create(Item, { name: 'after' }));
            await ctx.em.flush();
          },
        ],
      });
      await h.orm.em
        .fork()
        .persist(h.orm.em.create(Item, { name: 'book' }))
        .flush();
      const client = h.client();
      await client.post('/set', { n: 0 });
      // MikroORM 7.2's UnitOfWork puts the previous context back in resetTransaction(); here it forgets to.
      undo.push(replace(ownerOf(unitOfWork(h.orm), 'resetTransaction'), 'resetTransaction', () => {}));
      const sql = await h.count(() => client.post('/load-and-set', { n: 1 }));
      expect(seen).toEqual([false]);
      expect(verbs(sql)).toEqual(['select', 'select', 'update', 'begin', 'insert', 'commit']);
      expect(await h.orm.em.fork().count(Item, { name: 'after' })).toBe(1);
    });

    describe('the targeted UPDATE of a read extension', () => {
      const idleHarness = (breakIt?: (orm: MikroORM) => () => void) => {
        const config: HarnessOptions = { entity: IdleSession, options: { idleTimeout: 300, extensionDelay: 30 } };
        return breakIt ? startedWith(db, breakIt, config) : capturingWarnings(() => harness(db, config));
      };
      const idleExpireOf = async (client: Client) =>
        (await h!.orm.em.fork().findOneOrFail(IdleSession, { id: (await client.get('/state')).json.id })).idle
          .idleExpire;
      const now = () => Math.floor(h!.clock.ms / 1000);

      /** A read 30 s after the write extends the expiry with one UPDATE after the SELECT. */
      async function expectExtension(read: () => Promise<unknown>, client: Client): Promise<void> {
        h!.clock.advance(30);
        const sql = await h!.count(read);
        expect(verbs(sql)).toEqual(['select', 'update']);
        expect(sql[1]).toMatch(/idle_expire/);
        expect(await idleExpireOf(client)).toBe(now() + 300);
      }

      test("mapDataToFieldNames missing at start-up: MikroORM's own UPDATE extends the session", async () => {
        const { result, warnings } = await idleHarness((orm) =>
          replace(orm.em.getDriver(), 'mapDataToFieldNames', undefined),
        );
        h = result;
        expect(warnings).toHaveLength(1);
        const client = h.client();
        expect(verbs(await h.count(() => client.post('/set', { k: 'v' })))).toEqual(['begin', 'insert', 'commit']);
        const written = await idleExpireOf(client);
        await expectExtension(() => client.get('/get?key=k'), client);
        expect(await idleExpireOf(client)).toBe(written! + 30);
      });

      test("a TypeError from mapDataToFieldNames before the extension is sent: MikroORM's own UPDATE extends the session", async () => {
        const { result } = await idleHarness();
        h = result;
        const map = trap(h.orm.em.getDriver(), 'mapDataToFieldNames');
        undo.push(map.restore);
        const client = h.client();
        expect(verbs(await h.count(() => client.post('/set', { k: 'v' })))).toEqual(['insert']);
        // Armed by the time the read's route ran: the extension comes after the commit.
        await expectExtension(async () => {
          map.armed = true;
          expect((await client.get('/get?key=k')).json.value).toBe('v');
        }, client);
        expect(map.thrown).toBe(1);
      });
    });
  });
}
