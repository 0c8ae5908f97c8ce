import { afterEach, describe, expect, test } from 'vitest';
import { ConfigurableAbsoluteTimeout, ConfigurableCookie, ConfigurableIdleTimeout, defineSessionEntity, IdleTimeout } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, type Harness, type Route } from './support/app.js';

const Configurable = defineSessionEntity({
  tableName: 'configurable_session',
  features: [ConfigurableIdleTimeout, ConfigurableAbsoluteTimeout, ConfigurableCookie],
});
const Plain = defineSessionEntity({ tableName: 'plain_session', features: [IdleTimeout] });

/** Runs `fn` on the settings and reports a thrown error instead of failing the request. */
const attempt =
  (fn: (ctx: any, body: any) => void): Route =>
  (ctx, body) => {
    try {
      fn(ctx, body);
      return { ok: true };
    } catch (error) {
      return { error: (error as Error).name, message: (error as Error).message };
    }
  };

const routes: Record<string, Route> = {
  'GET /settings': (ctx) => ctx.session.settings,
  'POST /edit': attempt((ctx, body) =>
    ctx.session.settings.withEdit((s: any) => {
      for (const [name, value] of Object.entries(body)) s[name] = value;
    }),
  ),
  'POST /assign-outside-edit': attempt((ctx) => {
    (ctx.session.settings as any).idleTimeout = 10;
  }),
  'POST /edit-unsaved': (ctx) => {
    const settings = ctx.session.settings as any;
    settings.edit();
    settings.idleTimeout = 9999;
    ctx.session.set('touched', true);
    return { during: settings.idleTimeout };
  },
  'POST /edit-discard': (ctx) => {
    const settings = ctx.session.settings as any;
    settings.edit();
    settings.idleTimeout = 9999;
    settings.discard();
    return { after: settings.idleTimeout };
  },
};

for (const db of databases) {
  describe.skipIf(db.skip)(`per-session settings on ${db.name}`, () => {
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    const start = async (options = {}) =>
      (h = await harness(db, { entity: Configurable, options: { idleTimeout: 60, absoluteTimeout: 86_400, ...options }, routes }));

    test('settings read the global values until a session saves its own', async () => {
      await start();
      const client = h!.client();
      await client.post('/set', { a: 1 });
      expect((await client.get('/settings')).json).toMatchObject({ idleTimeout: 60, absoluteTimeout: 86_400, cookieMaxAge: null });
      expect((await client.post('/edit', { idleTimeout: 3600 })).json).toEqual({ ok: true });
      expect((await client.get('/settings')).json).toMatchObject({ idleTimeout: 3600, absoluteTimeout: 86_400 });
      // Another session keeps the global value.
      const other = h!.client();
      await other.post('/set', { b: 1 });
      expect((await other.get('/settings')).json.idleTimeout).toBe(60);
    });

    test('two sessions with different idle timeouts expire differently', async () => {
      await start();
      const long = h!.client();
      const short = h!.client();
      await long.post('/set', { who: 'long' });
      await short.post('/set', { who: 'short' });
      await long.post('/edit', { idleTimeout: 600 });
      h!.clock.advance(120);
      expect((await long.get('/get?key=who')).json.value).toBe('long');
      expect((await short.get('/get?key=who')).json.value).toBeNull();
    });

    test('the idle expiry follows a saved idle timeout at once', async () => {
      await start();
      const client = h!.client();
      await client.post('/set', { a: 1 });
      await client.post('/edit', { idleTimeout: 30 });
      h!.clock.advance(45);
      expect((await client.get('/get?key=a')).json.value).toBeNull();
    });

    test('the absolute expiry follows a saved absolute timeout, counted from creation', async () => {
      await start();
      const client = h!.client();
      await client.post('/set', { a: 1 });
      h!.clock.advance(50);
      await client.post('/edit', { absoluteTimeout: 100 });
      h!.clock.advance(49);
      expect((await client.get('/get?key=a')).json.value).toBe(1);
      h!.clock.advance(1);
      expect((await client.get('/get?key=a')).json.value).toBeNull();
    });

    test('values are validated on save, with the cross-setting rules, and a failed save changes nothing', async () => {
      await start();
      const client = h!.client();
      await client.post('/set', { a: 1 });
      const zero = (await client.post('/edit', { idleTimeout: 0 })).json;
      expect(zero).toEqual({ error: 'SettingsError', message: expect.stringMatching(/idleTimeout must be at least 1 second/) });
      const cross = (await client.post('/edit', { extensionChance: 50, extensionDeadline: 60 })).json;
      expect(cross.message).toMatch(/idleTimeout \(60\) must be greater than extensionDeadline \(60\)/);
      const path = (await client.post('/edit', { cookiePath: 'app' })).json;
      expect(path.message).toMatch(/cookiePath must start with "\/"/);
      expect((await client.get('/settings')).json).toMatchObject({ idleTimeout: 60, extensionChance: 100, cookiePath: '/' });
    });

    test('a ceiling caps per-session values', async () => {
      await start({ maxIdleTimeout: 7200 });
      const client = h!.client();
      await client.post('/set', { a: 1 });
      expect((await client.post('/edit', { idleTimeout: 7200 })).json).toEqual({ ok: true });
      const over = (await client.post('/edit', { idleTimeout: 7201 })).json;
      expect(over).toEqual({ error: 'SettingsError', message: expect.stringMatching(/idleTimeout: at most 7200 seconds \(the maxIdleTimeout option\)/) });
    });

    test('assigning outside edit mode is an error that says how to edit', async () => {
      await start();
      expect((await h!.client().post('/assign-outside-edit')).json).toEqual({
        error: 'SettingsError',
        message: expect.stringMatching(/read-only here.*withEdit/),
      });
    });

    test('unsaved edits are dropped at commit, and discard() drops them at once', async () => {
      await start();
      const client = h!.client();
      expect((await client.post('/edit-unsaved')).json).toEqual({ during: 9999 });
      expect((await client.get('/settings')).json.idleTimeout).toBe(60);
      expect((await client.post('/edit-discard')).json).toEqual({ after: 60 });
    });

    test('settings of a clean new session are metadata, not data: nothing is written', async () => {
      await start();
      const client = h!.client();
      const sql = await h!.count(() => client.post('/edit', { idleTimeout: 3600 }));
      expect(sql).toEqual([]);
      expect((await client.get('/settings')).json.idleTimeout).toBe(60);
    });

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
      const reply = await h!.client().request('/invalidate', { method: 'POST', headers: { cookie: `session=${cookie}` } });
      const removal = reply.headers.getSetCookie();
      expect(removal).toEqual([expect.stringMatching(/^session=;.*Max-Age=0/)]);
      expect(removal[0]).toMatch(/Path=\/app/);
      expect(removal[0]).toMatch(/SameSite=Strict/);
    });
  });

  describe.skipIf(db.skip)(`non-configurable settings on ${db.name}`, () => {
    test('changing a setting of a plain feature names the embeddable to use', async () => {
      const h = await harness(db, { entity: Plain, options: { idleTimeout: 60 }, routes });
      try {
        const client = h.client();
        await client.post('/set', { a: 1 });
        expect((await client.post('/edit', { idleTimeout: 10 })).json).toEqual({
          error: 'SettingsError',
          message: 'idleTimeout cannot be changed per session: embed ConfigurableIdleTimeout instead of IdleTimeout',
        });
        expect((await client.post('/edit', { cookieMaxAge: 10 })).json.message).toBe('cookieMaxAge cannot be changed per session: embed ConfigurableCookie');
        expect((await client.post('/edit', { cookieName: 'x' })).json.message).toBe('cookieName cannot be changed per session: it is fixed at start-up');
      } finally {
        await h.close();
      }
    });
  });
}
