import { randomBytes } from 'node:crypto';
import { bodyParser } from '@koa/bodyparser';
import grantModule from 'grant';
import Koa, { type Middleware } from 'koa';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { databases } from '../support/databases.js';
import { serve } from '../support/http.js';
import { integrationApp, router, TIMEOUT_MS, type IntegrationApp, type TimedClient } from './support.js';

/**
 * grant 5 (its Koa middleware) on koa-mikro-session, against a fake OAuth 2
 * provider the test serves on another loopback port, on every database.
 *
 * What grant does with the session (grant/lib/handler/koa-2.js): on
 * GET /connect/<provider> it assigns `ctx.session.grant = { provider, state,
 * nonce: undefined, code_verifier: undefined }` (undefined members: JSON drops
 * them); on the callback it reads `ctx.session.grant`, checks the `state`,
 * exchanges the code, and assigns `ctx.session.grant` again with the
 * `response` added (transport 'session') or puts it in `ctx.state.grant`
 * (transport 'state').  Proven: the state is kept in the session, the whole
 * dance ends with the access token, and a callback with a forged state gets no
 * token (the code is never exchanged).
 */
// grant's types declare an ES default export; loaded from ESM, the CommonJS module is that default's owner.
const grant = grantModule.default;
const CLIENT = { key: 'the-client-id', secret: 'the-client-secret' };

/** A fake OAuth 2 provider: an authorize endpoint that consents at once, and a token endpoint. */
async function fakeProvider() {
  /** Codes issued and not yet exchanged, with the redirect_uri they were issued for. */
  const codes = new Map<string, string>();
  /** Every token request, as the provider received it. */
  const exchanges: Record<string, string>[] = [];
  const app = new Koa();
  app.use(bodyParser());
  app.use(
    router({
      'GET /authorize': (ctx) => {
        const { client_id, redirect_uri, response_type, state } = ctx.query as Record<string, string>;
        if (client_id !== CLIENT.key || response_type !== 'code') ctx.throw(400, 'unknown client');
        const code = randomBytes(12).toString('hex');
        codes.set(code, redirect_uri);
        ctx.redirect(`${redirect_uri}?${new URLSearchParams({ code, state })}`);
        return undefined;
      },
      'POST /token': (ctx) => {
        const form = ctx.request.body as Record<string, string>;
        exchanges.push(form);
        const valid =
          form.grant_type === 'authorization_code' &&
          form.client_id === CLIENT.key &&
          form.client_secret === CLIENT.secret &&
          codes.get(form.code) === form.redirect_uri;
        codes.delete(form.code);
        if (!valid) {
          ctx.status = 400;
          return { error: 'invalid_grant' };
        }
        return { access_token: `token-for-${form.code}`, token_type: 'bearer', expires_in: 3600 };
      },
    }),
  );
  const server = await serve(app);
  return { url: server.url, exchanges, close: server.close };
}

/** Grant's configuration: two providers on the fake, one per transport. */
function grantConfig(origin: string, provider: string) {
  const fake = {
    oauth: 2,
    ...CLIENT,
    authorize_url: `${provider}/authorize`,
    access_url: `${provider}/token`,
    scope: ['profile'],
  };
  return {
    defaults: { origin, state: true },
    // transport 'session': grant stores the response in ctx.session.grant and redirects to callback.
    fake: { ...fake, transport: 'session', callback: '/done' },
    // transport 'state': grant puts it in ctx.state.grant and lets the callback request go on.
    fakestate: { ...fake, transport: 'state' },
  };
}

for (const db of databases) {
  describe.skipIf(db.skip)(`grant on ${db.name}`, () => {
    let h: IntegrationApp;
    let provider: Awaited<ReturnType<typeof fakeProvider>>;

    beforeAll(async () => {
      provider = await fakeProvider();
      // The app's origin is known once it listens: grant is created then.
      let grantMiddleware: Middleware = () => Promise.reject(new Error('grant is not configured yet'));
      h = await integrationApp(db, {
        setup(app) {
          app.use((ctx, next) => grantMiddleware(ctx, next));
          app.use(
            router({
              'GET /grant-session': (ctx) => ({ grant: ctx.session.grant ?? null }),
              'GET /done': (ctx) => ({ response: ctx.session.grant?.response ?? null }),
              'GET /connect/fakestate/callback': (ctx) => ({ response: ctx.state.grant?.response ?? null }),
            }),
          );
        },
      });
      grantMiddleware = grant.koa()(grantConfig(h.url, provider.url)) as Middleware;
    });
    afterAll(async () => {
      await h?.close();
      await provider?.close();
    });
    afterEach(() => expect(h.errors).toEqual([]));

    /** Starts the dance: the redirect to the provider's authorize endpoint, and the state grant sent. */
    async function connect(client: TimedClient, name = 'fake') {
      const reply = await client.get(`/connect/${name}`);
      expect(reply.status).toBe(302);
      const authorize = new URL(reply.headers.get('location')!);
      expect(authorize.origin + authorize.pathname).toBe(`${provider.url}/authorize`);
      expect(authorize.searchParams.get('redirect_uri')).toBe(`${h.url}/connect/${name}/callback`);
      return { authorize, state: authorize.searchParams.get('state')! };
    }

    /** The provider's consent: its redirect back to the app's callback, with code and state. */
    async function consent(authorize: URL): Promise<URL> {
      const response = await fetch(authorize, { redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS) });
      expect(response.status).toBe(302);
      return new URL(response.headers.get('location')!);
    }

    /** The browser following the provider's redirect back to the app. */
    const callback = (client: TimedClient, back: URL) => client.get(back.pathname + back.search);

    test('connecting stores the state in the session, without the undefined members', async () => {
      const client = h.client();
      const { state } = await connect(client, 'fakestate');
      expect(state).toMatch(/^[0-9a-f]{40}$/);
      const { grant: stored } = (await client.get('/grant-session')).json;
      // grant assigned { provider, state, nonce: undefined, code_verifier: undefined }.
      expect(stored).toEqual({ provider: 'fakestate', state });
      expect(Object.keys(stored).sort()).toEqual(['provider', 'state']);
    });

    test('with transport "session", connecting also stores the redirect as the response', async () => {
      const client = h.client();
      const { authorize, state } = await connect(client);
      const { grant: stored } = (await client.get('/grant-session')).json;
      expect(stored).toEqual({ provider: 'fake', state, response: authorize.href });
    });

    test('the whole dance ends with the access token in ctx.session.grant.response', async () => {
      const client = h.client();
      const { authorize, state } = await connect(client);
      const back = await consent(authorize);
      expect(back.searchParams.get('state')).toBe(state);
      const code = back.searchParams.get('code')!;

      const reply = await callback(client, back);
      expect(reply.status).toBe(302);
      expect(reply.headers.get('location')).toBe('/done');
      const exchange = provider.exchanges.at(-1)!;
      expect(exchange).toMatchObject({ code, client_id: CLIENT.key, redirect_uri: `${h.url}/connect/fake/callback` });

      const done = await client.get('/done');
      expect(done.json.response).toMatchObject({
        access_token: `token-for-${code}`,
        raw: { token_type: 'bearer', expires_in: 3600 },
      });
      expect((await client.get('/grant-session')).json.grant).toMatchObject({ provider: 'fake', state });
    });

    test('with transport "state", the callback route sees the token in ctx.state.grant', async () => {
      const client = h.client();
      const { authorize } = await connect(client, 'fakestate');
      const back = await consent(authorize);
      const reply = await callback(client, back);
      expect(reply.status).toBe(200);
      expect(reply.json.response).toMatchObject({ access_token: `token-for-${back.searchParams.get('code')}` });
    });

    test('a callback with a forged state gets no token, and the code is never exchanged', async () => {
      const client = h.client();
      const { authorize, state } = await connect(client);
      const back = await consent(authorize);
      back.searchParams.set('state', 'forged-by-an-attacker');
      const exchanges = provider.exchanges.length;

      const reply = await callback(client, back);
      expect(reply.headers.get('location')).toBe('/done');
      const { response } = (await client.get('/done')).json;
      expect(response).toEqual({ error: 'Grant: OAuth2 state mismatch' });
      expect(provider.exchanges.length).toBe(exchanges);
      // The session still holds the state it expects.
      expect((await client.get('/grant-session')).json.grant).toMatchObject({ state });
    });

    test('a callback from a browser that never connected gets no token', async () => {
      const victim = h.client();
      const { authorize } = await connect(victim);
      const back = await consent(authorize);
      // Another browser (an attacker's link) arrives at the callback without grant's session.
      const stranger = h.client();
      const reply = await callback(stranger, back);
      expect(reply.headers.get('location')).toMatch(/^\/\?error=Grant/);
      expect((await stranger.get('/done')).json.response).toBeNull();
    });
  });
}
