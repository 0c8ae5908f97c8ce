import { bodyParser } from '@koa/bodyparser';
import CSRF from 'koa-csrf';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { databases } from '../support/databases.js';
import { integrationApp, router, type IntegrationApp, type TimedClient } from './support.js';

/**
 * koa-csrf 5 behind koa-mikro-session (and @koa/bodyparser, which koa-csrf
 * needs: it reads ctx.request.body._csrf), on every database.
 *
 * koa-csrf keeps its secret in the session as a data property: on every
 * request `if (!ctx.session.secret) ctx.session.secret = await tokens.secret()`,
 * then `ctx.state._csrf = tokens.create(ctx.session.secret)`.  So the first GET
 * creates the session, and a token checks out only while the session keeps
 * the secret.  Proven: a form POST with the token of a GET passes (as a field
 * or a header); without it, with a wrong one or with another session's, 403
 * and nothing is written.
 */
for (const db of databases) {
  describe.skipIf(db.skip)(`koa-csrf on ${db.name}`, () => {
    let h: IntegrationApp;

    beforeAll(async () => {
      h = await integrationApp(db, {
        setup(app) {
          app.use(bodyParser());
          app.use(CSRF());
          app.use(
            router({
              'GET /form': (ctx) => ({ csrf: ctx.state._csrf as string, id: ctx.session.id }),
              'POST /submit': (ctx) => {
                const { name } = ctx.request.body as { name?: string };
                ctx.session.set('submitted', name);
                return { ok: true, name };
              },
            }),
          );
        },
      });
    });
    afterAll(() => h?.close());
    afterEach(() => expect(h.errors).toEqual([]));

    /** A page with a form: its token and the session's id. */
    async function page(client: TimedClient): Promise<{ csrf: string; id: string }> {
      const reply = await client.get('/form');
      expect(reply.status).toBe(200);
      return reply.json;
    }

    const submit = (client: TimedClient, fields: Record<string, string>) =>
      client.form('/submit', { name: 'Alice', ...fields });

    test('a form POST carrying the token of a GET passes; the secret is kept in the session', async () => {
      const client = h.client();
      const { csrf, id } = await page(client);
      const stored = await h.stored(id);
      expect(stored).toEqual({ secret: expect.any(String) });
      expect(await client.cookie()).not.toContain(stored!.secret);

      const reply = await submit(client, { _csrf: csrf });
      expect(reply.status).toBe(200);
      expect(reply.json).toEqual({ ok: true, name: 'Alice' });
      expect(await h.stored(id)).toEqual({ secret: stored!.secret, submitted: 'Alice' });
    });

    test('the token passes in a header too, and the tokens of earlier pages stay valid', async () => {
      const client = h.client();
      const first = await page(client);
      const second = await page(client);
      expect(second.csrf).not.toBe(first.csrf); // salted, from the same secret
      expect(second.id).toBe(first.id);
      expect((await client.post('/submit', { name: 'Bob' }, { headers: { 'x-csrf-token': first.csrf } })).status).toBe(
        200,
      );
      expect((await submit(client, { _csrf: second.csrf })).status).toBe(200);
    });

    test("a POST without the token, with a wrong one or with another session's gets 403 and writes nothing", async () => {
      const client = h.client();
      const { csrf, id } = await page(client);
      const other = await page(h.client());
      const attempts: Record<string, Record<string, string>> = {
        missing: {},
        wrong: { _csrf: csrf.slice(0, -1) + (csrf.endsWith('A') ? 'B' : 'A') },
        foreign: { _csrf: other.csrf },
      };
      for (const [name, fields] of Object.entries(attempts)) {
        const reply = await submit(client, fields);
        expect(reply.status, name).toBe(403);
        expect(reply.text, name).toBe('Invalid CSRF token');
      }
      expect(await h.stored(id)).toEqual({ secret: expect.any(String) });
      // The session is unharmed: its own token still passes.
      expect((await submit(client, { _csrf: csrf })).status).toBe(200);
    });

    test('a POST from a visitor with no session gets 403, and no session is created', async () => {
      const client = h.client();
      const reply = await submit(client, { _csrf: 'made-up' });
      expect(reply.status).toBe(403);
      expect(reply.cookies).toEqual([]);
    });
  });
}
