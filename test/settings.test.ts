import { afterEach, describe, expect, test } from 'vitest';
import { defineSessionEntity, IdleTimeout } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, type Harness } from './support/app.js';
import { configurableHarness, settingsRoutes as routes } from './features/support.js';

const Plain = defineSessionEntity({ tableName: 'plain_session', features: [IdleTimeout] });

for (const db of databases) {
  describe.skipIf(db.skip)(`per-session settings on ${db.name}`, () => {
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    const start = async (options = {}) => (h = await configurableHarness(db, options));

    test('settings read the global values until a session saves its own', async () => {
      await start();
      const client = h!.client();
      await client.post('/set', { a: 1 });
      expect((await client.get('/settings')).json).toMatchObject({
        idleTimeout: 60,
        absoluteTimeout: 86_400,
        cookieMaxAge: null,
      });
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
      expect(zero).toEqual({
        error: 'SettingsError',
        message: expect.stringMatching(/idleTimeout must be at least 1 second/),
      });
      const cross = (await client.post('/edit', { extensionChance: 50, extensionDeadline: 60 })).json;
      expect(cross.message).toMatch(/idleTimeout \(60\) must be greater than extensionDeadline \(60\)/);
      const path = (await client.post('/edit', { cookiePath: 'app' })).json;
      expect(path.message).toMatch(/cookiePath must start with "\/"/);
      expect((await client.get('/settings')).json).toMatchObject({
        idleTimeout: 60,
        extensionChance: 100,
        cookiePath: '/',
      });
    });

    test('a ceiling caps per-session values', async () => {
      await start({ maxIdleTimeout: 7200 });
      const client = h!.client();
      await client.post('/set', { a: 1 });
      expect((await client.post('/edit', { idleTimeout: 7200 })).json).toEqual({ ok: true });
      const over = (await client.post('/edit', { idleTimeout: 7201 })).json;
      expect(over).toEqual({
        error: 'SettingsError',
        message: expect.stringMatching(/idleTimeout: at most 7200 seconds \(the maxIdleTimeout option\)/),
      });
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
        expect((await client.post('/edit', { cookieMaxAge: 10 })).json.message).toBe(
          'cookieMaxAge cannot be changed per session: embed ConfigurableCookie',
        );
        expect((await client.post('/edit', { cookieName: 'x' })).json.message).toBe(
          'cookieName cannot be changed per session: it is fixed at start-up',
        );
      } finally {
        await h.close();
      }
    });
  });
}
