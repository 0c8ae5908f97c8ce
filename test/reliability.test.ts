// Reliability edges of the request lifecycle: the middleware's user-session
// functions called inside a request, and Vary: Cookie on error responses.
import type { Middleware } from 'koa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { CookieCodec } from '../src/codec.js';
import { ConfigurableCookie, defineSessionEntity, Userid } from '../src/index.js';
import { TOKEN_BYTES } from '../src/token.js';
import { databases } from './support/databases.js';
import { harness, SECRET, type Harness, type Route } from './support/app.js';

const RevokeSession = defineSessionEntity({ name: 'RevokeSession', tableName: 'revoke_session', features: [Userid] });
const PathSession = defineSessionEntity({
  name: 'PathSession',
  tableName: 'path_session',
  features: [Userid, ConfigurableCookie],
});

/** Every request of these tests gives up after 5 s: a deadlock fails the test instead of freezing the run. */
const timeout = () => ({ signal: AbortSignal.timeout(5000) });

let sessions: Harness['sessions'];
const routes: Record<string, Route> = {
  'POST /login': (ctx, body) => ((ctx.session.userid = body.userid), { ok: true }),
  'POST /admin/revoke': async (ctx, body) => ({
    revoked: await sessions.revokeUserSessions(body.userid),
    listed: (await sessions.listUserSessions(body.userid)).length,
  }),
  'POST /admin/revoke-and-fail': async (_ctx, body) => {
    await sessions.revokeUserSessions(body.userid);
    throw new Error('the route failed after revoking');
  },
  'GET /use-then-fail': (ctx) => {
    ctx.session.get('anything');
    ctx.throw(404, 'no such page');
  },
  'GET /fail-untouched': (ctx) => ctx.throw(500),
  'POST /app/login': (ctx, body) => {
    ctx.session.userid = body.userid;
    ctx.session.settings.withEdit((settings) => {
      settings.cookiePath = '/app';
    });
    return { ok: true };
  },
  'GET /app/whoami': (ctx) => ({ userid: ctx.session.userid }),
  'POST /cookie-settings': (ctx, body) => {
    try {
      ctx.session.settings.withEdit((settings) => Object.assign(settings, body));
      return { saved: true };
    } catch (error) {
      return { error: (error as Error).name, message: (error as Error).message };
    }
  },
};

/** An error handler that keeps the headers the stack set (Koa's own clears them). */
const keepHeaders: Middleware = async (ctx, next) => {
  try {
    await next();
  } catch (error) {
    ctx.status = (error as { status?: number }).status ?? 500;
    ctx.body = { error: (error as Error).message };
  }
};

for (const db of databases) {
  for (const transaction of [false, true]) {
    describe.skipIf(db.skip)(
      `the middleware's functions inside a request on ${db.name}, transaction: ${transaction}`,
      () => {
        let h: Harness;
        beforeAll(async () => {
          h = await harness(db, { entity: RevokeSession, routes, options: { transaction } });
          sessions = h.sessions;
        });
        afterAll(() => h?.close());

        test("revokeUserSessions(userid) in a route uses the request's EntityManager: it answers, and the user is logged out", async () => {
          const victim = h.client();
          await victim.post('/login', { userid: 7 }, timeout());
          const admin = h.client();
          const reply = await admin.post('/admin/revoke', { userid: 7 }, timeout());
          expect(reply.status).toBe(200);
          expect(reply.json).toEqual({ revoked: 1, listed: 0 });
          expect((await victim.get('/get?key=x', timeout())).cookies[0]?.value).toBe('');
        });

        test(
          transaction
            ? 'in transaction mode the revocation rolls back with a route that fails'
            : 'in the default mode the revocation is its own statement, committed at once',
          async () => {
            const victim = h.client();
            await victim.post('/login', { userid: 8 }, timeout());
            expect((await h.client().post('/admin/revoke-and-fail', { userid: 8 }, timeout())).status).toBe(500);
            expect((await sessions.listUserSessions(8)).length).toBe(transaction ? 1 : 0);
          },
        );
      },
    );
  }

  describe.skipIf(db.skip)(`Vary: Cookie on error responses on ${db.name}`, () => {
    let kept: Harness;
    let plain: Harness;
    beforeAll(async () => {
      kept = await harness(db, { routes, outer: [keepHeaders] });
      plain = await harness(db, { routes });
    });
    afterAll(async () => {
      await kept?.close();
      await plain?.close();
    });

    test('a route that used the session and failed answers with Vary: Cookie, under an error handler that keeps headers', async () => {
      const reply = await kept.client().get('/use-then-fail');
      expect(reply.status).toBe(404);
      expect(reply.headers.get('vary')).toMatch(/\bcookie\b/i);
    });

    test("and under Koa's own error handler, which clears the response's headers but sets the error's", async () => {
      const reply = await plain.client().get('/use-then-fail');
      expect(reply.status).toBe(404);
      expect(reply.headers.get('vary')).toMatch(/\bcookie\b/i);
    });

    test('a failing route that never used the session gets no Vary', async () => {
      const reply = await kept.client().get('/fail-untouched');
      expect(reply.status).toBe(500);
      expect(reply.headers.get('vary')).toBeNull();
    });
  });
}

for (const db of databases) {
  describe.skipIf(db.skip)(`a revoked session's cookie on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db, { entity: PathSession, routes });
    });
    afterAll(() => h?.close());

    test('is removed under its own Path, which only its cookie still knows once the row is gone', async () => {
      const client = h.client();
      const login = await client.post('/app/login', { userid: 11 });
      expect(login.cookies[0].path).toBe('/app');
      expect((await client.get('/app/whoami')).json).toEqual({ userid: 11 });
      expect(await h.sessions.revokeUserSessions(11)).toBe(1);
      const reply = await client.get('/app/whoami');
      expect(reply.json).toEqual({ userid: null });
      expect(reply.cookies).toHaveLength(1);
      expect(reply.cookies[0]).toMatchObject({ key: 'session', value: '', path: '/app' });
      // The browser dropped it: no dead cookie shadows the next session under /app.
      expect(await client.jar.getCookieString(`${h.url}/app/whoami`)).toBe('');
    });

    test.each([
      ['a path the Set-Cookie serializer refuses', { cookiePath: '/café' }],
      ['a domain it refuses', { cookieDomain: 'my_site.test' }],
    ])(
      'a per-session cookie setting with %s fails its save() with SettingsError and changes nothing',
      async (_, values) => {
        const client = h.client();
        await client.post('/set', { a: 1 });
        const reply = await client.post('/cookie-settings', values);
        expect(reply.status).toBe(200);
        expect(reply.json).toMatchObject({ error: 'SettingsError' });
        expect(reply.cookies).toEqual([]);
        // The session still works, and its cookie can still be written and removed.
        expect((await client.get('/get?key=a')).json.value).toBe(1);
        expect((await client.post('/invalidate')).cookies[0].value).toBe('');
      },
    );

    test('attributes a cookie carries are checked like a setting: a forged payload with bad ones is removed under the global ones, never a 500', async () => {
      const codec = new CookieCodec(SECRET, 'session');
      for (const carried of ['["/a;b",null]', '["/","my_site.test"]', '[5,null]', 'not json']) {
        const value = codec.encode(Buffer.concat([randomBytes(TOKEN_BYTES), Buffer.from(carried)]));
        const reply = await h.client().get('/app/whoami', { headers: { cookie: `session=${value}` } });
        expect(reply.status, carried).toBe(200);
        expect(reply.cookies[0], carried).toMatchObject({ value: '', path: '/' });
      }
    });

    test('a session with the global attributes carries none: its cookie is no longer than without ConfigurableCookie', async () => {
      const client = h.client();
      const reply = await client.post('/set', { a: 1 });
      const plain = await harness(db, { routes });
      try {
        const other = await plain.client().post('/set', { a: 1 });
        expect(reply.cookies[0].value.length).toBe(other.cookies[0].value.length);
      } finally {
        await plain.close();
      }
    });
  });
}
