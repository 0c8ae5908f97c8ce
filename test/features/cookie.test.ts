import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { databases } from '../support/databases.js';
import { harness, type Harness, type Route } from '../support/app.js';
import { attempt, configurableHarness, PropSession, setProperties } from './support.js';

/**
 * The ConfigurableCookie feature: cookie attributes per session, set through
 * ctx.session.settings (cookieMaxAge, cookiePath...) or koa-session's
 * ctx.session.maxAge, and the Path a session's removal carries.  The global
 * cookie options and the cookie codec are in ../cookie.test.ts; the settings
 * API itself in ../settings.test.ts.
 */
const maxAgeRoutes: Record<string, Route> = {
  'POST /prop': setProperties,
  'GET /max-age': (ctx) => ({ maxAge: ctx.session.maxAge }),
  'POST /max-age': (ctx, body) => attempt(() => (ctx.session.maxAge = body.maxAge)),
};

for (const db of databases) {
  describe.skipIf(db.skip)(`per-session cookie attributes through ctx.session.settings on ${db.name}`, () => {
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    const start = async (options = {}) => (h = await configurableHarness(db, options));

    test('per-session cookie attributes: a remember-me session gets a Max-Age, others do not', async () => {
      await start();
      const remembered = h!.client();
      await remembered.post('/set', { a: 1 });
      const reply = await remembered.post('/edit', { cookieMaxAge: 2_592_000 });
      // A new Set-Cookie carries the new attributes at once.
      expect(reply.headers.getSetCookie()).toEqual([expect.stringMatching(/Max-Age=2592000/)]);
      const plain = h!.client();
      const first = await plain.post('/set', { b: 1 });
      expect(first.headers.getSetCookie()[0]).not.toMatch(/Max-Age/);
    });

    test('a session with its own cookie path is removed with that path', async () => {
      await start();
      const client = h!.client();
      await client.post('/set', { a: 1 });
      const cookie = await client.cookie();
      await client.post('/edit', { cookiePath: '/app', cookieSameSite: 'strict' });
      // The client now holds a cookie for /app only; replay the value by hand to reach /invalidate.
      const reply = await h!
        .client()
        .request('/invalidate', { method: 'POST', headers: { cookie: `session=${cookie}` } });
      const removal = reply.headers.getSetCookie();
      expect(removal).toEqual([expect.stringMatching(/^session=;.*Max-Age=0/)]);
      expect(removal[0]).toMatch(/Path=\/app/);
      expect(removal[0]).toMatch(/SameSite=Strict/);
    });
  });

  describe.skipIf(db.skip)(`ctx.session.maxAge on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db, { entity: PropSession, routes: maxAgeRoutes });
    });
    afterAll(() => h?.close());

    test("maxAge: 'session' by default; a number of ms gives this session a Max-Age, 'session' takes it back", async () => {
      const client = h.client();
      expect((await client.get('/max-age')).json.maxAge).toBe('session');
      await client.post('/prop', { a: 1 });
      const remember = await client.post('/max-age', { maxAge: 30 * 86_400_000 });
      expect(remember.json).toEqual({ value: 30 * 86_400_000 });
      expect(remember.headers.get('set-cookie')).toMatch(/Max-Age=2592000/);
      expect((await client.get('/max-age')).json.maxAge).toBe(2_592_000_000);
      // Rounded up to whole seconds: a Max-Age is never shorter than asked.
      await client.post('/max-age', { maxAge: 1500 });
      expect((await client.get('/max-age')).json.maxAge).toBe(2000);
      const forget = await client.post('/max-age', { maxAge: 'session' });
      expect(forget.headers.get('set-cookie')).not.toMatch(/Max-Age/i);
      expect((await client.get('/max-age')).json.maxAge).toBe('session');
    });

    test('maxAge: bad values are refused with SettingsError', async () => {
      const client = h.client();
      for (const maxAge of [0, -5, 'forever', null]) {
        expect((await client.post('/max-age', { maxAge })).json, String(maxAge)).toMatchObject({
          error: 'SettingsError',
        });
      }
    });
  });
}
