// What a session may store, checked where it is set and again at commit for
// in-place changes, the same on every database: values JSON would corrupt,
// text a database refuses, nesting past MAX_DEPTH; and size checks that apply
// only to what a request actually writes.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MAX_DEPTH } from '../src/data.js';
import { databases } from './support/databases.js';
import { harness, Session, type Harness, type Route } from './support/app.js';

/** `levels` nested arrays around a string: `nest(2)` is [["x"]]. */
const nest = (levels: number): unknown => (levels === 0 ? 'x' : [nest(levels - 1)]);
/** Built iteratively: a recursive builder would overflow the stack itself. */
function deep(levels: number): unknown {
  let value: unknown = 'x';
  for (let i = 0; i < levels; i++) value = { next: value };
  return value;
}

function attempt(fn: () => unknown): unknown {
  try {
    fn();
    return { ok: true };
  } catch (error) {
    return { error: (error as Error).name, message: (error as Error).message };
  }
}

const routes: Record<string, Route> = {
  'POST /store': (ctx, body) =>
    attempt(() =>
      ctx.session.set(body.key ?? 'v', body.text !== undefined ? String.fromCharCode(...body.text) : body.value),
    ),
  'POST /store-key': (ctx, body) => attempt(() => ctx.session.set(String.fromCharCode(...body.key), 1)),
  'POST /store-deep': (ctx, body) =>
    attempt(() => ctx.session.set('v', body.object ? deep(body.levels) : nest(body.levels))),
  'POST /flash-deep': (ctx, body) => attempt(() => ctx.session.flash(nest(body.levels))),
  'GET /depth': (ctx) => {
    let levels = 0;
    for (let value = ctx.session.get('v'); Array.isArray(value); value = value[0]) levels++;
    let flashLevels = 0;
    for (let value = ctx.session.peekFlash()[0]; Array.isArray(value); value = value[0]) flashLevels++;
    return { levels, flashLevels };
  },
  'POST /mutate': (ctx, body) => {
    const box = ctx.session.get('box') as Record<string, unknown>;
    if (body.kind === 'bigint') box.inner = 1n;
    if (body.kind === 'cycle') box.inner = box;
    if (body.kind === 'nul') box.inner = 'a\u0000b';
    if (body.kind === 'fine') box.inner = 'fine';
    return { ok: true };
  },
  'POST /peek-and-change': (ctx) => {
    const [message] = ctx.session.peekFlash() as { list: string[] }[];
    message.list.push('x'.repeat(5000));
    return { ok: true };
  },
};

for (const db of databases) {
  describe.skipIf(db.skip)(`stored values on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db, { routes, options: { maxSize: 4000 } });
    });
    afterAll(() => h?.close());

    const state = async (client: ReturnType<Harness['client']>) => (await client.get('/state')).json;

    test.each([
      ['U+0000 in a string', [97, 0, 98], /U\+0000/],
      ['a lone high surrogate', [97, 0xd800], /lone UTF-16 surrogate/],
      ['a lone low surrogate', [0xdc00, 98], /lone UTF-16 surrogate/],
    ])('%s is refused at set() with SessionDataError, on every database alike', async (_, text, message) => {
      const client = h.client();
      const { json } = await client.post('/store', { text });
      expect(json).toMatchObject({ error: 'SessionDataError', message: expect.stringMatching(message) });
      expect((await state(client)).isNew).toBe(true);
    });

    test('a well-formed surrogate pair (an emoji) is stored and read back', async () => {
      const client = h.client();
      expect((await client.post('/store', { text: [0xd83d, 0xde00] })).json).toEqual({ ok: true });
      expect((await client.get('/get?key=v')).json.value).toBe('😀');
    });

    test('a key with U+0000 or a lone surrogate is refused too', async () => {
      const client = h.client();
      for (const key of [[107, 0], [0xdbff]]) {
        expect((await client.post('/store-key', { key })).json).toMatchObject({ error: 'SessionDataError' });
      }
      expect((await state(client)).isNew).toBe(true);
    });

    test(`values nested ${MAX_DEPTH} levels are stored in data and flash; one more is refused`, async () => {
      const client = h.client();
      expect((await client.post('/store-deep', { levels: MAX_DEPTH })).json).toEqual({ ok: true });
      expect((await client.post('/flash-deep', { levels: MAX_DEPTH })).json).toEqual({ ok: true });
      expect((await client.get('/depth')).json).toEqual({ levels: MAX_DEPTH, flashLevels: MAX_DEPTH });
      for (const route of ['/store-deep', '/flash-deep']) {
        const { json } = await client.post(route, { levels: MAX_DEPTH + 1 });
        expect(json).toMatchObject({
          error: 'SessionDataError',
          message: expect.stringContaining(`nested deeper than ${MAX_DEPTH} levels`),
        });
      }
    });

    test('a value nested 20,000 levels is refused with SessionDataError, not a stack overflow', async () => {
      const { json } = await h.client().post('/store-deep', { levels: 20_000, object: true });
      expect(json).toMatchObject({ error: 'SessionDataError', message: expect.stringContaining('nested deeper') });
    });

    test.each(['bigint', 'cycle', 'nul'])(
      'a value changed in place after set() into something unstorable (%s) fails the commit as SessionDataError, writing nothing',
      async (kind) => {
        const client = h.client();
        await client.post('/set', { box: { inner: 'start' } });
        const errors: unknown[] = [];
        const onError = (error: unknown) => errors.push(error);
        h.app.on('error', onError);
        try {
          let status = 0;
          const sql = await h.count(async () => (status = (await client.post('/mutate', { kind })).status));
          expect(status).toBe(500);
          expect(sql.filter((statement) => !/^select/i.test(statement))).toEqual([]);
        } finally {
          h.app.off('error', onError);
        }
        expect(errors).toHaveLength(1);
        expect(errors[0]).toMatchObject({
          name: 'SessionDataError',
          message: expect.stringContaining('ctx.session.box, changed in place'),
        });
        expect((await client.get('/get?key=box')).json.value).toEqual({ inner: 'start' });
        expect((await client.post('/mutate', { kind: 'fine' })).status).toBe(200);
        expect((await client.get('/get?key=box')).json.value).toEqual({ inner: 'fine' });
      },
    );

    test('a session over maxSize still reads: only what a request writes is checked', async () => {
      const client = h.client();
      await client.post('/set', { small: 1 });
      const { id } = await state(client);
      // Grown past the limit behind the app's back (as a lowered maxSize leaves it).
      await h.orm.em.fork().nativeUpdate(Session, { id }, { data: { small: 1, big: { text: 'x'.repeat(6000) } } });
      for (const path of ['/state', '/get?key=big']) {
        const sql = await h.count(async () => expect((await client.get(path)).status).toBe(200));
        expect(sql.map((statement) => statement.split(' ')[0].toLowerCase())).toEqual(['select']);
      }
      // A write of the data would store it all: refused, as before.
      expect((await client.post('/set', { small: 2 })).status).toBe(500);
      expect((await client.get('/get?key=small')).json.value).toBe(1);
    });

    test('peekFlash() returns copies: changing one stores nothing and cannot grow the session past maxSize', async () => {
      const client = h.client();
      await client.post('/flash', { message: { list: ['a'] } });
      const sql = await h.count(async () => expect((await client.post('/peek-and-change')).status).toBe(200));
      expect(sql.map((statement) => statement.split(' ')[0].toLowerCase())).toEqual(['select']);
      expect((await client.get('/peek')).json.messages).toEqual([{ list: ['a'] }]);
    });
  });
}
