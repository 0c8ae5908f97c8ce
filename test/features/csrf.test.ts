import type { Middleware } from 'koa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { csrfProtection, FeatureNotEnabledError } from '../../src/index.js';
import { databases } from '../support/databases.js';
import { harness, Item, type Harness } from '../support/app.js';
import type { Client } from '../support/http.js';
import { featurelessSuite, state, userRoutes, UserSession, userSuite } from './support.js';

/**
 * The Csrf feature, proven through real HTTP requests: CSRF tokens and
 * csrfProtection().
 */
for (const db of databases) {
  describe.skipIf(db.skip)(`CSRF tokens on ${db.name}`, () => {
    const s = userSuite(db);
    const { row } = s;

    test('getCsrfToken() makes a 43-character base64url token and stores it in a new session', async () => {
      const client = s.h.client();
      const reply = await client.get('/csrf');
      expect(reply.json.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(reply.cookies).toHaveLength(1);
      const { id } = await state(client);
      expect((await row(id))?.csrf).toEqual({ csrfToken: reply.json.token });
    });

    test('the same token comes back on the next request; newCsrfToken() replaces it', async () => {
      const client = s.h.client();
      const first = (await client.get('/csrf')).json.token;
      expect((await client.get('/csrf')).json.token).toBe(first);
      const second = (await client.post('/csrf')).json.token;
      expect(second).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(second).not.toBe(first);
      expect((await client.get('/csrf')).json.token).toBe(second);
    });
  });

  describe.skipIf(db.skip)(`csrfProtection() on ${db.name}`, () => {
    let h: Harness;
    const formPost = (client: Client, fields: Record<string, string>) =>
      client.request('/transfer', {
        method: 'POST',
        body: new URLSearchParams(fields).toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
    const transferred = (name: string) => h.orm.em.fork().count(Item, { name });

    /** A client whose committed session holds a CSRF token. */
    async function withToken(): Promise<{ client: Client; token: string }> {
      const client = h.client();
      const { token } = (await client.get('/csrf')).json;
      return { client, token };
    }

    beforeAll(async () => {
      // The body parser an app would put before csrfProtection() for HTML forms.
      const formBody: Middleware = async (ctx, next) => {
        if (ctx.is('application/x-www-form-urlencoded')) {
          const chunks: Buffer[] = [];
          for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
          (ctx.request as { body?: unknown }).body = Object.fromEntries(
            new URLSearchParams(Buffer.concat(chunks).toString()),
          );
        }
        await next();
      };
      h = await harness(db, {
        entity: UserSession,
        middleware: [formBody, csrfProtection()],
        routes: {
          'GET /csrf': userRoutes['GET /csrf'],
          // A GET that writes: how a session gets committed without ever asking for a token.
          'GET /visit': (ctx) => (ctx.session.set('visited', true), { ok: true }),
          // Writes an app row and session data: a refused request must commit neither.
          'POST /transfer': (ctx, body) => {
            const name = String((ctx.request as { body?: Record<string, string> }).body?.name ?? body.name);
            ctx.em.persist(ctx.em.create(Item, { name }));
            ctx.session.set('transferred', name);
            return { ok: true };
          },
        },
      });
    });
    afterAll(() => h?.close());

    test('GET passes without a token', async () => {
      const client = h.client();
      expect((await client.get('/noop')).status).toBe(200);
      expect((await client.get('/csrf')).status).toBe(200);
    });

    test('POST without a token is 403 with a clear message, and writes nothing', async () => {
      const { client } = await withToken();
      const reply = await client.post('/transfer', { name: 'no-token' });
      expect(reply.status).toBe(403);
      expect(reply.text).toMatch(/CSRF token/);
      expect(reply.cookies).toEqual([]);
      expect(await transferred('no-token')).toBe(0);
      expect((await client.get('/get?key=transferred')).json.value).toBeNull();
    });

    test('POST with a wrong token is 403', async () => {
      const { client, token } = await withToken();
      const wrong = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
      const reply = await client.post('/transfer', { name: 'wrong-token' }, { headers: { 'x-csrf-token': wrong } });
      expect(reply.status).toBe(403);
      expect(await transferred('wrong-token')).toBe(0);
    });

    test('POST with the right token in the x-csrf-token header passes', async () => {
      const { client, token } = await withToken();
      const reply = await client.post('/transfer', { name: 'by-header' }, { headers: { 'x-csrf-token': token } });
      expect(reply.status).toBe(200);
      expect(await transferred('by-header')).toBe(1);
      expect((await client.get('/get?key=transferred')).json.value).toBe('by-header');
    });

    test('POST with the right token in the _csrf form field passes; a wrong one does not', async () => {
      const { client, token } = await withToken();
      expect((await formPost(client, { _csrf: token, name: 'by-form' })).status).toBe(200);
      expect(await transferred('by-form')).toBe(1);
      expect((await formPost(client, { _csrf: 'x'.repeat(43), name: 'by-bad-form' })).status).toBe(403);
      expect(await transferred('by-bad-form')).toBe(0);
    });

    test('a session without a token refuses every token, even another session’s', async () => {
      const { token } = await withToken();
      const bare = h.client();
      const header = { headers: { 'x-csrf-token': token } };
      expect((await bare.post('/transfer', { name: 'no-session' }, header)).status).toBe(403);
      // A committed session that never asked for a token.
      await bare.get('/visit');
      expect((await bare.get('/state')).json.isNew).toBe(false);
      expect((await bare.post('/transfer', { name: 'tokenless-session' }, header)).status).toBe(403);
      expect(await transferred('no-session')).toBe(0);
      expect(await transferred('tokenless-session')).toBe(0);
    });
  });

  describe.skipIf(db.skip)(`without the Userid and Csrf features on ${db.name}`, () => {
    const s = featurelessSuite(db);

    test.each([
      ['getCsrfToken', 'Csrf'],
      ['newCsrfToken', 'Csrf'],
    ])('%s throws FeatureNotEnabledError naming %s', async (name, feature) => {
      const reply = await s.h.client().get(`/call?name=${encodeURIComponent(name)}`);
      expect(reply.json).toEqual({ feature, message: expect.stringContaining(`needs the ${feature} feature`) });
    });

    test('csrfProtection() fails loudly on a POST rather than letting it through', async () => {
      const reply = await s.h.client().post('/set', { a: 1 });
      expect(reply.status).toBe(500);
      expect(s.errors.at(-1)).toBeInstanceOf(FeatureNotEnabledError);
      expect(s.errors.at(-1)?.message).toMatch(/csrfProtection\(\) needs the Csrf feature/);
    });
  });
}
