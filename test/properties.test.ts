// koa-session's and express-session's conventions on ctx.session: data as
// properties beside the Map API, JSON value semantics, `ctx.session = null`,
// and the promise / callback methods (save, regenerate, destroy).  maxAge, a
// ConfigurableCookie setting, is in features/cookie.test.ts.
import { inspect } from 'node:util';
import type { Context } from 'koa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { databases } from './support/databases.js';
import { Gate, harness, type Harness, type Route } from './support/app.js';
import { attempt, PropSession, setProperties } from './features/support.js';

const gate = { current: new Gate() };

const routes: Record<string, Route> = {
  'POST /prop': setProperties,
  'GET /prop': (ctx) => ({
    value: ctx.session[String(ctx.query.key)] ?? null,
    has: String(ctx.query.key) in ctx.session,
  }),
  'POST /views': (ctx) => {
    ctx.session.views = ((ctx.session.views as number | undefined) ?? 0) + 1;
    return { views: ctx.session.views };
  },
  'POST /push-prop': (ctx, body) => {
    (ctx.session.cart as unknown[]).push(body.value);
    return { ok: true };
  },
  'POST /delete-prop': (ctx, body) => ({ deleted: delete ctx.session[body.key], has: body.key in ctx.session }),
  'POST /undefined-prop': (ctx, body) => {
    ctx.session[body.key] = undefined;
    return { has: ctx.session.has(body.key) };
  },
  'GET /views-of-data': (ctx) => ({
    keys: Object.keys(ctx.session),
    spread: { ...ctx.session },
    json: JSON.parse(JSON.stringify(ctx.session)),
    toJSON: ctx.session.toJSON(),
    forIn: (() => {
      const keys: string[] = [];
      for (const key in ctx.session) keys.push(key);
      return keys;
    })(),
  }),
  'POST /reserved': (ctx, body) => ({
    assign: attempt(() => ((ctx.session as any)[body.name] = 1)),
    remove: attempt(() => delete (ctx.session as any)[body.name]),
    define: attempt(() => Object.defineProperty(ctx.session, body.name, { value: 1 })),
  }),
  'POST /reserved-as-data': (ctx) => {
    ctx.session.set('save', 'kept as data');
    ctx.session.set('toString', 'also data');
    return { save: typeof ctx.session.save, get: ctx.session.get('save'), interpolated: `${ctx.session}`.length > 0 };
  },
  'GET /reserved-as-data': (ctx) => ({
    get: ctx.session.get('save'),
    keys: Object.keys(ctx.session),
    json: ctx.session.toJSON(),
  }),
  'POST /bad-prop': (ctx, body) => attempt(() => (ctx.session.bad = badValues()[body.kind])),
  'POST /json-values': (ctx) => {
    const when = new Date(Date.UTC(2026, 11, 2, 12));
    ctx.session.when = when;
    ctx.session.grant = { provider: 'fake', nonce: undefined, dynamic: { state: 's1', nested: undefined } };
    ctx.session.price = { amount: 12.5, toJSON: () => '12.50 EUR' };
    ctx.session.set('viaSet', { skipped: undefined, kept: 1 });
    // Within the request the values are the objects the route set.
    return { sameDate: ctx.session.when === when };
  },
  'GET /json-values': (ctx) => ({
    when: ctx.session.when,
    grant: ctx.session.grant,
    nonceKept: 'nonce' in (ctx.session.grant as object),
    price: ctx.session.price,
    viaSet: ctx.session.get('viaSet'),
  }),
  'POST /replace': (ctx, body) => {
    ctx.session = body;
    return { keys: Object.keys(ctx.session) };
  },
  'POST /replace-bad': (ctx, body) =>
    attempt(() => {
      if (body.kind === 'number') ctx.session = 5 as any;
      else if (body.kind === 'key') ctx.session = { fine: 1, ['a\u0000b']: 2 };
      else ctx.session = { fine: 1, bad: 1n };
    }),
  'POST /end': (ctx) => {
    ctx.session = null;
    return { isNew: ctx.session.isNew, size: ctx.session.size };
  },
  'POST /login-prop': (ctx, body) => {
    ctx.session.userid = body.userid;
    return { userid: ctx.session.userid };
  },
  'GET /inspect': (ctx) => ({ text: inspect(ctx.session) }),
  'GET /await': async (ctx) => ({ same: (await ctx.session) === ctx.session }),
  // The promise and callback methods.
  'POST /callbacks': async (ctx) => {
    const order: string[] = [];
    const before = ctx.session.id;
    const called = (name: string) =>
      new Promise<unknown>((resolve) => {
        const returned = (ctx.session as any)[name]((error: unknown) => {
          order.push(`${name} callback`);
          resolve(error);
        });
        order.push(`${name} returned ${returned instanceof Promise ? 'a promise' : typeof returned}`);
      });
    ctx.session.set('n', 1);
    const regenerated = await called('regenerate');
    const after = ctx.session.id;
    ctx.session.passport = { user: 7 };
    const saved = await called('save');
    return { order, errors: [regenerated, saved], changed: before !== after, id: after, data: ctx.session.toJSON() };
  },
  'POST /destroy-callback': async (ctx) => {
    const error = await new Promise((resolve) => ctx.session.destroy(resolve));
    return { error, isNew: ctx.session.isNew, size: ctx.session.size };
  },
  'POST /promises': async (ctx) => {
    const before = ctx.session.id;
    const regenerated = ctx.session.regenerate();
    await regenerated;
    ctx.session.set('after', true);
    await ctx.session.save();
    return { regenerated: regenerated instanceof Promise, changed: before !== ctx.session.id };
  },
  'POST /save-error-callback': async (ctx) => {
    ctx.session.big = 'x'.repeat(2000);
    const errors: unknown[] = [];
    await new Promise<void>((resolve) =>
      ctx.session.save((error) => {
        errors.push(error);
        resolve();
      }),
    );
    delete ctx.session.big;
    return { errors: errors.map((error) => (error as Error)?.name ?? error) };
  },
  'POST /save-then-fail': async (ctx, body) => {
    ctx.session.step = body.step;
    if (body.save) await ctx.session.save();
    throw new Error('the route failed after the session changed');
  },
  'POST /save-then-wait': async (ctx, body) => {
    ctx.session.step = body.step;
    await ctx.session.save();
    await gate.current.pass();
    return { ok: true };
  },
};

function badValues(): Record<string, unknown> {
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  return {
    bigint: 10n,
    cycle,
    map: new Map([['a', 1]]),
    set: new Set([1]),
    nan: Number.NaN,
    infinity: -Infinity,
    function: () => 1,
    symbol: Symbol('s'),
    'function member': { run: () => 1 },
    'undefined in an array': [1, undefined],
    'a toJSON returning a BigInt': { toJSON: () => 1n },
  };
}

for (const db of databases) {
  describe.skipIf(db.skip)(`ctx.session's conventions on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db, { entity: PropSession, routes });
    });
    afterAll(() => h?.close());

    const row = (id: string) => h.orm.em.fork().findOne(PropSession, { id });
    const state = async (client: ReturnType<Harness['client']>) => (await client.get('/state')).json;

    test('data as properties: set, read on the next request, in, delete, and the Map API sees the same keys', async () => {
      const client = h.client();
      await client.post('/prop', { cart: [{ sku: 'A1' }], theme: 'dark' });
      expect((await client.get('/prop?key=cart')).json).toEqual({ value: [{ sku: 'A1' }], has: true });
      expect((await client.get('/get?key=theme')).json.value).toBe('dark');
      await client.post('/set', { fromSet: 1 });
      expect((await client.get('/prop?key=fromSet')).json).toEqual({ value: 1, has: true });
      expect((await client.post('/delete-prop', { key: 'theme' })).json).toEqual({ deleted: true, has: false });
      expect((await client.get('/prop?key=theme')).json).toEqual({ value: null, has: false });
      expect((await state(client)).keys).toEqual(['cart', 'fromSet']);
    });

    test("koa-session's counter: ctx.session.views = (ctx.session.views ?? 0) + 1", async () => {
      const client = h.client();
      for (let i = 1; i <= 3; i++) expect((await client.post('/views')).json.views).toBe(i);
      const { id } = await state(client);
      expect((await row(id))!.data).toEqual({ views: 3 });
    });

    test('a nested in-place change through a property is saved, with one UPDATE', async () => {
      const client = h.client();
      await client.post('/prop', { cart: ['a'] });
      const sql = await h.count(() => client.post('/push-prop', { value: 'b' }));
      expect(sql.map((s) => s.split(' ')[0].toLowerCase())).toEqual(['select', 'update']);
      expect((await client.get('/prop?key=cart')).json.value).toEqual(['a', 'b']);
    });

    test('reading a property costs what get() costs: one SELECT, nothing written', async () => {
      const client = h.client();
      await client.post('/prop', { theme: 'light' });
      const sql = await h.count(() => client.get('/prop?key=theme'));
      expect(sql.map((s) => s.split(' ')[0].toLowerCase())).toEqual(['select']);
    });

    test('Object.keys, spread, for...in, JSON.stringify and toJSON() show the data', async () => {
      const client = h.client();
      await client.post('/prop', { a: 1, b: { c: [2] } });
      const { json } = await client.get('/views-of-data');
      const data = { a: 1, b: { c: [2] } };
      expect(json).toEqual({ keys: ['a', 'b'], spread: data, json: data, toJSON: data, forIn: ['a', 'b'] });
    });

    test('ctx.session.x = undefined removes the key, as JSON would', async () => {
      const client = h.client();
      await client.post('/prop', { gone: 1, stays: 2 });
      expect((await client.post('/undefined-prop', { key: 'gone' })).json).toEqual({ has: false });
      expect((await state(client)).data).toEqual({ stays: 2 });
    });

    test.each([
      'get',
      'set',
      'id',
      'isNew',
      'save',
      'regenerate',
      'toJSON',
      'settings',
      'size',
      'then',
      'hasOwnProperty',
    ])(
      'the API name %s is reserved: writing or deleting it as data throws SessionDataError naming set()',
      async (name) => {
        const client = h.client();
        const { json } = await client.post('/reserved', { name });
        for (const result of [json.assign, json.define]) {
          expect(result).toMatchObject({ error: 'SessionDataError' });
          expect(result.message).toContain(`ctx.session.set(${JSON.stringify(name)}, value)`);
        }
        expect(json.remove).toMatchObject({ error: 'SessionDataError' });
        expect(json.remove.message).toContain(`ctx.session.delete(${JSON.stringify(name)})`);
        // Nothing was stored.
        expect((await state(client)).keys).toEqual([]);
      },
    );

    test('a data key with a reserved name is reachable through get/set, and the API keeps its name', async () => {
      const client = h.client();
      expect((await client.post('/reserved-as-data')).json).toEqual({
        save: 'function',
        get: 'kept as data',
        interpolated: true,
      });
      const { json } = await client.get('/reserved-as-data');
      expect(json.get).toBe('kept as data');
      // Properties can't reach those keys, so they are not listed as properties; toJSON() is the whole data.
      expect(json.keys).toEqual([]);
      expect(json.json).toEqual({ save: 'kept as data', toString: 'also data' });
    });

    test.each(Object.keys(badValues()))(
      'a property set to what JSON would corrupt (%s) throws SessionDataError and stores nothing',
      async (kind) => {
        const client = h.client();
        const { json } = await client.post('/bad-prop', { kind });
        expect(json).toMatchObject({ error: 'SessionDataError' });
        expect(json.message).toMatch(/^ctx\.session\.bad: cannot store the value/);
        expect((await state(client)).keys).toEqual([]);
      },
    );

    test('JSON value semantics: undefined members dropped, toJSON() honoured, a Date comes back as its ISO string', async () => {
      const client = h.client();
      expect((await client.post('/json-values')).json).toEqual({ sameDate: true });
      const { json } = await client.get('/json-values');
      expect(json).toEqual({
        when: '2026-12-02T12:00:00.000Z',
        grant: { provider: 'fake', dynamic: { state: 's1' } },
        nonceKept: false,
        price: '12.50 EUR',
        viaSet: { kept: 1 },
      });
    });

    test('ctx.session = null ends the session: the row is deleted, the cookie removed, the request goes on with a new one', async () => {
      const client = h.client();
      await client.post('/prop', { a: 1 });
      const { id } = await state(client);
      const reply = await client.post('/end');
      expect(reply.json).toEqual({ isNew: true, size: 0 });
      expect(reply.cookies[0].value).toBe('');
      expect(await row(id)).toBeNull();
      expect((await state(client)).isNew).toBe(true);
    });

    test('ctx.session = { ... } replaces the data; anything but an object or null is refused and changes nothing', async () => {
      const client = h.client();
      await client.post('/prop', { old: 1 });
      expect((await client.post('/replace', { fresh: 2, more: [3] })).json.keys).toEqual(['fresh', 'more']);
      expect((await state(client)).data).toEqual({ fresh: 2, more: [3] });
      expect((await client.post('/replace-bad', { kind: 'number' })).json).toMatchObject({ error: 'SessionDataError' });
      const bigint = (await client.post('/replace-bad', { kind: 'bigint' })).json;
      expect(bigint).toMatchObject({ error: 'SessionDataError' });
      expect(bigint.message).toContain('"bad"');
      // A key no database takes is refused before anything is cleared, too.
      expect((await client.post('/replace-bad', { kind: 'key' })).json).toMatchObject({ error: 'SessionDataError' });
      expect((await state(client)).data).toEqual({ fresh: 2, more: [3] });
    });

    test('the userid accessor still works as a property (a setter of the API, not data)', async () => {
      const client = h.client();
      await client.post('/prop', { a: 1 });
      expect((await client.post('/login-prop', { userid: 42 })).json).toEqual({ userid: 42 });
      const { keys, id } = await state(client);
      expect(keys).toEqual(['a']);
      expect(((await row(id)) as any).userid.userid).toBe(42);
    });

    test('util.inspect(ctx.session) shows the data, not the lifecycle or its keys', async () => {
      const client = h.client();
      await client.post('/prop', { visible: 'yes' });
      const { text } = (await client.get('/inspect')).json;
      expect(text).toBe("Session { visible: 'yes' }");
    });

    test('await ctx.session is the session itself: `then` is reserved, not data', async () => {
      expect((await h.client().get('/await')).json).toEqual({ same: true });
    });

    test('regenerate(cb) and save(cb), as passport calls them: each callback once, asynchronously, with null; the data is kept', async () => {
      const client = h.client();
      await client.post('/prop', { before: 'login' });
      const old = (await state(client)).id;
      const { json } = await client.post('/callbacks');
      expect(json.order).toEqual([
        'regenerate returned a promise',
        'regenerate callback',
        'save returned a promise',
        'save callback',
      ]);
      expect(json.errors).toEqual([null, null]);
      expect(json.changed).toBe(true);
      expect(json.data).toEqual({ before: 'login', n: 1, passport: { user: 7 } });
      expect(await row(old)).toBeNull();
      expect((await state(client)).id).toBe(json.id);
      expect((await row(json.id))!.data).toEqual({ before: 'login', n: 1, passport: { user: 7 } });
    });

    test('destroy(cb) ends the session and calls back with null', async () => {
      const client = h.client();
      await client.post('/prop', { a: 1 });
      const { id } = await state(client);
      expect((await client.post('/destroy-callback')).json).toEqual({ error: null, isNew: true, size: 0 });
      expect(await row(id)).toBeNull();
    });

    test('await ctx.session.regenerate() and await ctx.session.save() return promises', async () => {
      const client = h.client();
      await client.post('/prop', { a: 1 });
      expect((await client.post('/promises')).json).toEqual({ regenerated: true, changed: true });
      expect((await state(client)).data).toEqual({ a: 1, after: true });
    });

    test('save(cb) reports a failure to its callback (here maxSize), and the request goes on', async () => {
      const small = await harness(db, { entity: PropSession, routes, options: { maxSize: 1000 } });
      try {
        const client = small.client();
        await client.post('/prop', { a: 1 });
        const reply = await client.post('/save-error-callback');
        expect(reply.status).toBe(200);
        expect(reply.json.errors).toEqual(['SessionDataError']);
        expect((await client.get('/state')).json.data).toEqual({ a: 1 });
      } finally {
        await small.close();
      }
    });

    for (const transaction of [false, true]) {
      test(`save() commits now (transaction: ${transaction}): another connection sees the change while the route still runs`, async () => {
        const app = await harness(db, { entity: PropSession, routes, options: { transaction } });
        try {
          const client = app.client();
          await client.post('/prop', { step: 1 });
          const { id } = (await client.get('/state')).json;
          gate.current = new Gate();
          const pending = client.post('/save-then-wait', { step: 2 });
          await gate.current.reached(1);
          // SQLite has one connection, held by nobody now: the route's transaction ended with save().
          expect(((await app.orm.em.fork().findOne(PropSession, { id })) as any).data).toEqual({ step: 2 });
          gate.current.open();
          expect((await pending).status).toBe(200);
        } finally {
          await app.close();
        }
      });
    }

    test('without save() a failing route writes nothing; after save() what was saved stays', async () => {
      const client = h.client();
      await client.post('/prop', { step: 1 });
      expect((await client.post('/save-then-fail', { step: 2 })).status).toBe(500);
      expect((await state(client)).data).toEqual({ step: 1 });
      expect((await client.post('/save-then-fail', { step: 3, save: true })).status).toBe(500);
      expect((await state(client)).data).toEqual({ step: 3 });
    });
  });
}

describe('lazy sessions and properties', () => {
  const db = databases[0];
  let h: Harness;
  beforeAll(async () => {
    h = await harness(db, {
      entity: PropSession,
      options: { lazy: true },
      routes: {
        'GET /unloaded': (ctx: Context) => attempt(() => ctx.session.cart),
        'GET /unloaded-then': async (ctx: Context) => ({ thenable: typeof (ctx.session as any).then }),
      },
    });
  });
  afterAll(() => h?.close());

  test('a property read before load() throws SessionNotLoadedError naming the property', async () => {
    const { json } = await h.client().get('/unloaded');
    expect(json).toMatchObject({ error: 'SessionNotLoadedError' });
    expect(json.message).toContain('ctx.session.cart was used before the session was loaded');
  });

  test('`then` is never data, so awaiting the session never touches it before load()', async () => {
    expect((await h.client().get('/unloaded-then')).json).toEqual({ thenable: 'undefined' });
  });
});

test("the README's list of reserved names is the code's", async () => {
  const { readFile } = await import('node:fs/promises');
  const { RESERVED } = await import('../src/session.js');
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const listed = /<!-- reserved-names -->(.*?), and `Object\.prototype`'s own/s.exec(readme)![1];
  const documented = [...listed.matchAll(/`([^`]+)`/g)].map((match) => match[1]);
  const own = [...RESERVED].filter((name) => !Object.hasOwn(Object.prototype, name));
  expect(documented).toEqual(own.sort());
});
