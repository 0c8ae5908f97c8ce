import { describe, expect, test } from 'vitest';
import { ConfigurationError } from '../../src/index.js';
import { databases } from '../support/databases.js';
import { Session } from '../support/app.js';
import { events, expectRemoval, h, login, now, startupAttempts, stored, timeoutsSuite } from './support.js';

/**
 * The absolute timeout (OWASP), proven through real HTTP requests against a
 * real database.  Time moves only through the harness's FakeClock.  What it
 * does together with the idle timeout (expiresAt, turning timeouts on and off)
 * is in idle.test.ts.
 */
for (const db of databases) {
  describe.skipIf(db.skip)(`absolute timeout on ${db.name}`, () => {
    const start = timeoutsSuite(db);

    test('activity does not extend it: valid at created + 3599 s, expired at created + 3600 s', async () => {
      await start({ absoluteTimeout: 3600 });
      const { client, id } = await login();
      const created = now();
      expect((await stored(id))!.absolute.absoluteExpire).toBe(created + 3600);
      for (let i = 0; i < 3; i++) {
        h!.clock.advance(1000);
        await client.post('/write', { k: `w${i}` });
        await client.get('/peek');
      }
      expect((await stored(id))!.absolute.absoluteExpire).toBe(created + 3600);
      h!.clock.advance(599);
      expect((await client.get('/peek')).json).toEqual({ value: 'w2', isNew: false });

      h!.clock.advance(1);
      const expired = await client.get('/peek');
      expect(expired.json).toEqual({ value: null, isNew: true });
      expectRemoval(expired);
      expect(await stored(id)).toBeNull();
      expect(events).toEqual([
        { name: 'session:expired', id, reason: 'absolute' },
        { name: 'session:destroyed', id, reason: 'expired' },
      ]);
    });

    test('regenerate() keeps created: the absolute timeout does not restart', async () => {
      await start({ absoluteTimeout: 3600 });
      const { client, id } = await login();
      const created = now();
      h!.clock.advance(1800);
      const regenerated = await client.post('/regenerate');
      const newId = regenerated.json.id;
      expect(newId).not.toBe(id);
      expect(regenerated.json.created).toBe(created);
      expect(events).toEqual([{ name: 'session:regenerated', id: newId, reason: undefined }]);
      expect(await stored(id)).toBeNull();
      const row = (await stored(newId))!;
      expect(row.created).toBe(created);
      expect(row.absolute.absoluteExpire).toBe(created + 3600);

      h!.clock.advance(1799);
      expect((await client.get('/peek')).json.value).toBe('v');
      h!.clock.advance(1);
      expect((await client.get('/peek')).json.value).toBeNull();
      expect(events).toContainEqual({ name: 'session:expired', id: newId, reason: 'absolute' });
    });

    test('with both timeouts, whichever comes first ends the session', async () => {
      await start({ idleTimeout: 600, absoluteTimeout: 3600 });
      const { client, id } = await login();
      for (let i = 0; i < 7; i++) {
        h!.clock.advance(500);
        expect((await client.get('/peek')).json.value).toBe('v');
      }
      // 3500 s: the idle expiry (4100) lies beyond the absolute one (3600).
      h!.clock.advance(100);
      expect((await client.get('/peek')).json.value).toBeNull();
      expect(events[0]).toEqual({ name: 'session:expired', id, reason: 'absolute' });
    });
  });
}

describe('start-up errors of the absolute timeout', () => {
  const attempt = startupAttempts();

  test.each([
    [
      'absoluteTimeout without AbsoluteTimeout',
      attempt({ absoluteTimeout: 60 }, Session),
      /option absoluteTimeout needs the AbsoluteTimeout feature: add AbsoluteTimeout \(or ConfigurableAbsoluteTimeout\)/,
    ],
    ['absoluteTimeout -1', attempt({ absoluteTimeout: -1 }), /absoluteTimeout must be at least 1 second/],
  ])('%s', (_, call, message) => {
    expect(call).toThrow(ConfigurationError);
    expect(call).toThrow(message);
  });
});
