import { bodyParser } from '@koa/bodyparser';
import koaPassport from 'koa-passport';
import { Strategy as LocalStrategy } from 'passport-local';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { databases } from '../support/databases.js';
import type { SessionOptions } from '../../src/index.js';
import { integrationApp, router, type IntegrationApp, type TimedClient } from './support.js';

/**
 * koa-passport 6 (passport 0.6) with passport-local, on koa-mikro-session, in
 * the default mode and with `transaction: true`, on every database.
 *
 * What passport does with the session (passport/lib/sessionmanager.js), through
 * koa-passport's `req` mock whose `req.session` is `ctx.session`:
 * - login: `req.session.regenerate(cb)`, then `req.session.passport ??= {}`,
 *   `req.session.passport.user = id` (an in-place change), `req.session.save(cb)`;
 * - every request (passport.session()): reads `req.session.passport.user` and
 *   runs deserializeUser;
 * - logout: `delete req.session.passport.user`, `save(cb)`, then `regenerate(cb)`;
 * - failureMessage: `req.session.messages = [...]; .push(msg)`;
 *   successReturnToOrRedirect: reads and deletes `req.session.returnTo`.
 * Proven: login changes the session id and the next requests are
 * authenticated; bad credentials log nobody in; logout makes the next request
 * (and the pre-logout cookie) anonymous; ten concurrent logins all answer.
 */
interface User {
  id: number;
  username: string;
  password: string;
}

const USERS: User[] = Array.from({ length: 10 }, (_, i) => ({
  id: i + 1,
  username: `user${i + 1}`,
  password: `password ${i + 1}`,
}));
const [alice, bob] = USERS;
const WRONG = 'Wrong username or password';

const MODES: { name: string; options: Partial<SessionOptions> }[] = [
  { name: 'default mode', options: {} },
  { name: 'transaction: true', options: { transaction: true } },
];

/** A passport of its own for each app, and the ids deserializeUser was asked for. */
function buildPassport() {
  const deserialized: unknown[] = [];
  const passport = new koaPassport.KoaPassport();
  passport.use(
    new LocalStrategy((username, password, done) => {
      const user = USERS.find((candidate) => candidate.username === username);
      if (!user || user.password !== password) done(null, false, { message: WRONG });
      else done(null, user);
    }),
  );
  passport.serializeUser((user, done) => done(null, (user as User).id));
  passport.deserializeUser((id, done) => {
    deserialized.push(id);
    done(null, USERS.find((user) => user.id === id) ?? false);
  });
  return { passport, deserialized };
}

for (const db of databases) {
  for (const mode of MODES) {
    describe.skipIf(db.skip)(`koa-passport on ${db.name}, ${mode.name}`, () => {
      let h: IntegrationApp;
      let deserialized: unknown[];

      beforeAll(async () => {
        const built = buildPassport();
        deserialized = built.deserialized;
        const { passport } = built;
        h = await integrationApp(db, {
          options: mode.options,
          setup(app) {
            app.use(bodyParser());
            app.use(passport.initialize());
            app.use(passport.session());
            app.use(
              router({
                /** Gives the visitor a session before any login. */
                'POST /visit': (ctx) => {
                  ctx.session.set('visits', ((ctx.session.get('visits') as number | undefined) ?? 0) + 1);
                  return { id: ctx.session.id };
                },
                'GET /me': (ctx) => ({
                  authenticated: ctx.isAuthenticated(),
                  user: (ctx.state.user as User | undefined)?.username ?? null,
                  id: ctx.session.id,
                  data: Object.fromEntries(ctx.session.entries()),
                }),
                /** Sends an anonymous visitor to log in, remembering where to come back. */
                'GET /private': (ctx) => {
                  if (ctx.isAuthenticated()) return { private: (ctx.state.user as User).username };
                  ctx.session.set('returnTo', '/private');
                  ctx.redirect('/login');
                  return undefined;
                },
                'POST /login': passport.authenticate('local', {
                  successReturnToOrRedirect: '/me',
                  failureRedirect: '/login',
                  failureMessage: true,
                }),
                /** koa-passport's custom-callback form: the route logs the user in itself. */
                'POST /login-now': (ctx, next) =>
                  passport.authenticate('local', async (error: unknown, user: User | false) => {
                    if (error || !user) ctx.throw(401);
                    await ctx.login(user);
                    // passport's save(cb) has run: the row is committed before the route answers.
                    ctx.body = { id: ctx.session.id, isNew: ctx.session.isNew, stored: await h.stored(ctx.session.id) };
                  })(ctx, next),
                'POST /logout': async (ctx) => {
                  await ctx.logout();
                  ctx.redirect('/');
                  return undefined;
                },
              }),
            );
          },
        });
      });
      afterAll(() => h?.close());
      afterEach(() => expect(h.errors).toEqual([]));

      const login = (client: TimedClient, user: User, password = user.password) =>
        client.form('/login', { username: user.username, password });
      const me = async (client: TimedClient) => {
        const reply = await client.get('/me');
        expect(reply.status).toBe(200);
        return reply.json as { authenticated: boolean; user: string | null; id: string; data: Record<string, unknown> };
      };

      test('login regenerates the session id, keeps its data and authenticates the next requests', async () => {
        const client = h.client();
        const visit = await client.post('/visit');
        const before = { id: visit.json.id as string, cookie: await client.cookie() };
        expect(before.cookie).toBeDefined();
        // An anonymous visitor of a private page is sent to log in; the page is remembered.
        expect((await client.get('/private')).headers.get('location')).toBe('/login');

        const reply = await login(client, alice);
        expect(reply.status).toBe(302);
        expect(reply.headers.get('location')).toBe('/private'); // passport read and deleted returnTo
        expect(reply.cookies.map((cookie) => cookie.key)).toEqual(['session']);
        expect(await client.cookie()).not.toBe(before.cookie);

        const seen = deserialized.length;
        const state = await me(client);
        expect(state).toMatchObject({ authenticated: true, user: alice.username });
        expect(state.id).not.toBe(before.id);
        expect(deserialized.slice(seen)).toEqual([alice.id]);
        // The data outlived the regeneration; passport's user is stored; returnTo is gone.
        expect(state.data).toEqual({ visits: 1, passport: { user: alice.id } });
        expect(await h.stored(state.id)).toEqual({ visits: 1, passport: { user: alice.id } });
        // The pre-login row is gone: its cookie can't be fixed on a victim.
        expect(await h.stored(before.id)).toBeNull();
        expect((await client.get('/private')).json).toEqual({ private: alice.username });

        const replay = h.client();
        await replay.setCookie(before.cookie!);
        expect(await me(replay)).toMatchObject({ authenticated: false, user: null });
      });

      test('login on a visitor without a session authenticates the next request', async () => {
        const client = h.client();
        const reply = await login(client, bob);
        expect(reply.status).toBe(302);
        expect(reply.headers.get('location')).toBe('/me');
        expect(await me(client)).toMatchObject({
          authenticated: true,
          user: bob.username,
          data: { passport: { user: bob.id } },
        });
      });

      test('ctx.login() resolves once the session is written (passport waits for save(cb))', async () => {
        const client = h.client();
        const reply = await client.form('/login-now', { username: bob.username, password: bob.password });
        expect(reply.status).toBe(200);
        expect(reply.json).toEqual({ id: expect.any(String), isNew: false, stored: { passport: { user: bob.id } } });
        expect(await me(client)).toMatchObject({ authenticated: true, user: bob.username, id: reply.json.id });
      });

      test('bad credentials log nobody in, and passport keeps its message in the session', async () => {
        const client = h.client();
        await client.post('/visit');
        const before = await client.cookie();
        const seen = deserialized.length;
        for (const attempt of [
          () => login(client, alice, 'not the password'),
          () => client.form('/login', { username: 'nobody', password: 'x' }),
        ]) {
          const reply = await attempt();
          expect(reply.status).toBe(302);
          expect(reply.headers.get('location')).toBe('/login');
        }
        expect(await client.cookie()).toBe(before); // no regeneration without a login
        const state = await me(client);
        expect(state).toMatchObject({ authenticated: false, user: null });
        expect(state.data).toEqual({ visits: 1, messages: [WRONG, WRONG] });
        expect(deserialized.slice(seen)).toEqual([]);
      });

      test('logout makes the next request anonymous, and the logged-in cookie too', async () => {
        const client = h.client();
        await login(client, alice);
        const loggedIn = await me(client);
        expect(loggedIn).toMatchObject({ authenticated: true, user: alice.username });
        const loggedInJar = client.snapshot();

        const reply = await client.post('/logout');
        expect(reply.status).toBe(302);
        expect(reply.cookies.map((cookie) => cookie.key)).toEqual(['session']); // regenerated: a new cookie

        const after = await me(client);
        expect(after).toMatchObject({ authenticated: false, user: null });
        expect(after.id).not.toBe(loggedIn.id);
        expect(after.data).toEqual({ passport: {} }); // passport deleted its user in place
        expect(await h.stored(loggedIn.id)).toBeNull();

        // The cookie the user had while logged in no longer logs anyone in.
        loggedInJar();
        expect(await me(client)).toMatchObject({ authenticated: false, user: null });
      });

      test('ten concurrent logins all answer, each with its own user', async () => {
        const clients = USERS.map(() => h.client());
        // Half of the visitors already have a session, half have none.
        await Promise.all(clients.map((client, i) => (i % 2 ? client.post('/visit') : undefined)));
        const replies = await Promise.all(clients.map((client, i) => login(client, USERS[i])));
        expect(replies.map((reply) => reply.status)).toEqual(USERS.map(() => 302));
        expect(replies.map((reply) => reply.headers.get('location'))).toEqual(USERS.map(() => '/me'));
        const states = await Promise.all(clients.map(me));
        expect(states.map((state) => state.user)).toEqual(USERS.map((user) => user.username));
        expect(states.every((state) => state.authenticated)).toBe(true);
        expect(new Set(states.map((state) => state.id)).size).toBe(USERS.length);
      });
    });
  }
}
