// The session's response headers are written on Node's response directly
// (set-cookie.ts): what a route put on the response before must survive
// as Koa's ctx.set() and ctx.vary() would have left it.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { databases } from './support/databases.js';
import { harness, type Harness } from './support/app.js';

for (const db of databases) {
  describe.skipIf(db.skip)(`the session's response headers on ${db.name}`, () => {
    let h: Harness;
    const errors: unknown[] = [];
    beforeAll(async () => {
      h = await harness(db, {
        routes: {
          'POST /set-among-headers': (ctx, body) => {
            ctx.set('Vary', 'Accept-Encoding');
            ctx.set('Cache-Control', 'public, max-age=60');
            ctx.cookies.set('theme', 'dark', { signed: false });
            ctx.cookies.set('session', 'stale', { signed: false });
            ctx.session.set('n', body.n);
            return { ok: true };
          },
          'GET /read-with-vary': (ctx) => {
            ctx.set('Vary', String(ctx.query.vary));
            return { value: ctx.session.get('n') ?? null };
          },
          'GET /read-then-stream': (ctx) => {
            ctx.session.get('n');
            ctx.respond = false;
            ctx.res.writeHead(200, { 'content-type': 'text/plain' });
            ctx.res.end('streamed');
          },
        },
      });
      h.app.on('error', (error) => errors.push(error));
    });
    afterAll(() => h?.close());

    test("a new session keeps the route's other cookies and Vary, and replaces its Cache-Control", async () => {
      const reply = await h.client().post('/set-among-headers', { n: 1 });
      expect(reply.status).toBe(200);
      expect(reply.headers.get('vary')).toBe('Accept-Encoding, Cookie');
      expect(reply.headers.get('cache-control')).toBe('no-store');
      const cookies = reply.cookies.map((cookie) => [cookie.key, cookie.value]);
      expect(cookies).toHaveLength(2);
      expect(cookies[0]).toEqual(['theme', 'dark']);
      // The route's own `session` cookie is replaced by the session's, not sent beside it.
      expect(cookies[1][0]).toBe('session');
      expect(cookies[1][1]).not.toBe('stale');
    });

    test('a read merges Cookie into the Vary a route set, without repeating it', async () => {
      const client = h.client();
      await client.post('/set', { n: 2 });
      const cases: [string, string][] = [
        ['Accept-Language', 'Accept-Language, Cookie'],
        ['cookie', 'cookie'],
        ['*', '*'],
      ];
      for (const [vary, expected] of cases) {
        const reply = await client.get(`/read-with-vary?vary=${encodeURIComponent(vary)}`);
        expect(reply.json.value).toBe(2);
        expect(reply.headers.get('vary')).toBe(expected);
      }
    });

    test('a route that sent its headers itself gets no Vary and no error', async () => {
      const client = h.client();
      await client.post('/set', { n: 3 });
      const before = errors.length;
      const reply = await client.get('/read-then-stream');
      expect(reply.status).toBe(200);
      expect(reply.text).toBe('streamed');
      expect(reply.headers.get('vary')).toBeNull();
      expect(errors.length).toBe(before);
    });
  });
}
