import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { databases } from './support/databases.js';
import { harness, Item, Session, type Harness } from './support/app.js';

for (const db of databases) {
  describe.skipIf(db.skip)(`session on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db);
    });
    afterAll(() => h?.close());

    const rows = () => h.orm.em.fork().count(Session, {});

    test('a clean new session writes nothing and sends no cookie', async () => {
      const client = h.client();
      const before = await rows();
      const sql = await h.count(() => client.get('/get?key=missing'));
      const reply = await client.get('/state');
      expect(reply.json).toMatchObject({ isNew: true, size: 0, keys: [] });
      expect(reply.cookies).toEqual([]);
      expect(sql).toEqual([]);
      expect(await rows()).toBe(before);
    });

    test('the first data inserts the row and sends an encrypted cookie with no data in it', async () => {
      const client = h.client();
      h.clock.advance(10);
      const reply = await client.post('/set', { color: 'blue' });
      expect(reply.status).toBe(200);
      expect(reply.cookies).toHaveLength(1);
      const cookie = reply.cookies[0];
      expect(cookie).toMatchObject({ key: 'session', path: '/', httpOnly: true, sameSite: 'lax', secure: false });
      expect(cookie.value).not.toContain('blue');
      expect(Buffer.from(cookie.value, 'base64url').toString('latin1')).not.toContain('blue');
      expect(reply.headers.get('cache-control')).toBe('no-store');
      expect(reply.headers.get('vary')).toMatch(/cookie/i);

      const state = await client.get('/state');
      expect(state.json).toMatchObject({
        isNew: false,
        size: 1,
        data: { color: 'blue' },
        created: Math.floor(h.clock.ms / 1000),
      });
      expect(state.cookies).toEqual([]);
      expect(state.json.id).toMatch(/^[0-9a-f]{64}$/);
      // The id is a hash, not the token: the cookie does not contain it in any form.
      expect(cookie.value).not.toContain(state.json.id);
      const row = await h.orm.em.fork().findOneOrFail(Session, { id: state.json.id });
      expect(row.data).toEqual({ color: 'blue' });
    });

    test('the data API: get, set, has, delete, clear, keys, entries, size', async () => {
      const client = h.client();
      await client.post('/set', { a: 1, b: { nested: [1, 2] }, c: 'three' });
      expect((await client.get('/get?key=b')).json.value).toEqual({ nested: [1, 2] });
      expect((await client.post('/delete', { key: 'a' })).json.deleted).toBe(true);
      expect((await client.post('/delete', { key: 'a' })).json.deleted).toBe(false);
      expect((await client.get('/state')).json).toMatchObject({
        size: 2,
        keys: ['b', 'c'],
        data: { b: { nested: [1, 2] }, c: 'three' },
      });
      await client.post('/flash', { message: 'kept' });
      await client.post('/clear');
      expect((await client.get('/state')).json).toMatchObject({ size: 0, keys: [] });
      // clear() keeps flash messages: they live in their own column.
      expect((await client.get('/flash')).json.messages).toEqual(['kept']);
    });

    test('a key named __proto__ is stored as a plain key', async () => {
      const client = h.client();
      await client.request('/set', {
        method: 'POST',
        body: '{"__proto__": {"polluted": true}}',
        headers: { 'content-type': 'application/json' },
      });
      expect((await client.get('/get?key=__proto__')).json.value).toEqual({ polluted: true });
      expect((await client.get('/get?key=polluted')).json.value).toBeNull();
      expect(({} as any).polluted).toBeUndefined();
    });

    test('flash messages: queues, pop, peek and duplicates', async () => {
      const client = h.client();
      await client.post('/flash', { message: 'saved' });
      await client.post('/flash', { message: 'saved', options: { allowDuplicate: false } });
      await client.post('/flash', { message: 'saved' });
      await client.post('/flash', { message: { text: 'oops' }, options: { queue: 'error' } });
      await client.post('/flash', { message: { text: 'oops' }, options: { queue: 'error', allowDuplicate: false } });
      expect((await client.get('/peek')).json.messages).toEqual(['saved', 'saved']);
      expect((await client.get('/peek?queue=error')).json.messages).toEqual([{ text: 'oops' }]);
      expect((await client.get('/flash')).json.messages).toEqual(['saved', 'saved']);
      expect((await client.get('/flash')).json.messages).toEqual([]);
      expect((await client.get('/flash?queue=error')).json.messages).toEqual([{ text: 'oops' }]);
      expect((await client.get('/peek?queue=error')).json.messages).toEqual([]);
    });

    test('a flash message alone makes a new session dirty', async () => {
      const client = h.client();
      const reply = await client.post('/flash', { message: 'welcome' });
      expect(reply.cookies).toHaveLength(1);
      expect((await client.get('/flash')).json.messages).toEqual(['welcome']);
    });

    test('a nested change is saved without changed()', async () => {
      const client = h.client();
      await client.post('/set', { cart: [] });
      await client.post('/push', { value: { sku: 'A1' } });
      await client.post('/push', { value: { sku: 'B2' } });
      expect((await client.get('/get?key=cart')).json.value).toEqual([{ sku: 'A1' }, { sku: 'B2' }]);
    });

    test('a route error rolls back the app entity and the session, and sends no cookie', async () => {
      const client = h.client();
      const items = () => h.orm.em.fork().count(Item, { name: 'doomed' });
      const before = await rows();
      const failed = await client.post('/item', { name: 'doomed', fail: true });
      expect(failed.status).toBe(500);
      expect(failed.cookies).toEqual([]);
      expect(await items()).toBe(0);
      expect(await rows()).toBe(before);

      // An existing session: its change is rolled back with the app's row.
      await client.post('/set', { lastItem: 'none' });
      expect((await client.post('/item', { name: 'doomed', fail: true })).status).toBe(500);
      expect(await items()).toBe(0);
      expect((await client.get('/get?key=lastItem')).json.value).toBe('none');

      // And on success both are written by one commit.
      const ok = await client.post('/item', { name: 'kept' });
      expect(ok.status).toBe(200);
      expect(await h.orm.em.fork().count(Item, { name: 'kept' })).toBe(1);
      expect((await client.get('/get?key=lastItem')).json.value).toBe('kept');
    });

    test('invalidate() deletes the row, removes the cookie and continues with a fresh session', async () => {
      const client = h.client();
      await client.post('/set', { user: 'ann' });
      const old = (await client.get('/state')).json.id;
      const before = await rows();
      const reply = await client.post('/invalidate');
      expect(reply.cookies).toHaveLength(1);
      expect(reply.cookies[0].value).toBe('');
      expect(reply.cookies[0].expiryTime()).toBeLessThan(Date.now());
      expect(await rows()).toBe(before - 1);
      expect(await h.orm.em.fork().findOne(Session, { id: old })).toBeNull();
      expect((await client.get('/state')).json).toMatchObject({ isNew: true, size: 0 });
    });

    test('invalidate() then new data replaces the cookie in the same response', async () => {
      const client = h.client();
      await client.post('/set', { user: 'ann' });
      const oldCookie = await client.cookie();
      const reply = await client.post('/invalidate-and-set', {});
      expect(reply.status).toBe(200);
      const newCookie = await client.cookie();
      expect(newCookie).toBeTruthy();
      expect(newCookie).not.toBe(oldCookie);
      expect((await client.get('/state')).json.data).toEqual({ fresh: true });
    });

    test('values JSON would corrupt or cannot hold are rejected at set() with a clear error', async () => {
      const client = h.client();
      for (const kind of ['bigint', 'function', 'circular', 'nan', 'nested-map', 'symbol']) {
        const reply = await client.post('/set-bad', { kind });
        expect(reply.json, kind).toMatchObject({
          error: 'SessionDataError',
          message: expect.stringContaining('session values are stored as JSON'),
        });
      }
      expect((await client.post('/set-bad', { kind: 'circular' })).json.message).toMatch(/circular/);
      expect((await client.post('/set-bad', { kind: 'nested-map' })).json.message).toMatch(/value\.inner\[1\].*Map/);
      // Nothing was stored: the session stayed clean.
      expect((await client.get('/state')).json).toMatchObject({ isNew: true, size: 0 });
    });

    test('a session over maxSize is refused before anything is written', async () => {
      const small = await harness(db, { options: { maxSize: 150 } });
      try {
        const client = small.client();
        await client.post('/set', { cart: [] });
        const before = (await client.get('/state')).json.id;
        // Growing a nested value in place is measured too.
        for (let i = 0; i < 3; i++) expect((await client.post('/push', { value: 'x'.repeat(40) })).status).toBe(200);
        const tooBig = await client.post('/push', { value: 'x'.repeat(40) });
        expect(tooBig.status).toBe(500);
        expect((await client.get('/get?key=cart')).json.value).toHaveLength(3);
        const fresh = small.client();
        const refused = await small.count(() => fresh.post('/set', { big: 'y'.repeat(300) }));
        expect(refused).toEqual([]);
        expect(await small.orm.em.fork().count(Session, {})).toBe(1);
        expect((await client.get('/state')).json.id).toBe(before);
      } finally {
        await small.close();
      }
    });

    test('statement budget of the default mode', async () => {
      const client = h.client();
      // No cookie, session untouched: nothing.
      expect(await h.count(() => client.get('/noop'))).toEqual([]);
      // A new session: one INSERT, atomic on its own, so no BEGIN/COMMIT around it.
      const insert = await h.count(() => client.post('/set', { n: 1 }));
      expect(insert.map(verb)).toEqual(['insert']);
      // Valid cookie, read-only: the primary-key SELECT and nothing else.
      const read = await h.count(() => client.get('/get?key=n'));
      expect(read.map(verb)).toEqual(['select']);
      // The statement prepared at start-up, not one built by findOne() on every request.
      expect(read[0]).toMatch(/^select \* from [`"]session[`"] where [`"]id[`"] = \?$/);
      // Valid cookie, route ignores the session: still only the SELECT (lazy: true avoids it).
      expect((await h.count(() => client.get('/noop'))).map(verb)).toEqual(['select']);
      // A change: the SELECT and one targeted UPDATE of the data column and the version.
      const update = await h.count(() => client.post('/set', { n: 2 }));
      expect(update.map(verb)).toEqual(['select', 'update']);
      expect(update[1]).toMatch(
        /set [`"]data[`"] = \?, [`"]version[`"] = \? where [`"]id[`"] = \? and [`"]version[`"] = \?/,
      );
    });
  });
}

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();
