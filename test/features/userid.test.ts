import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CookieCodec } from '../../src/codec.js';
import { defineSessionEntity, FeatureNotEnabledError, Userid } from '../../src/index.js';
import { TOKEN_BYTES } from '../../src/token.js';
import { databases } from '../support/databases.js';
import { harness, SECRET, type Harness } from '../support/app.js';
import type { Client, Reply } from '../support/http.js';
import { uuidUser } from '../support/uuid-user.js';
import { featurelessSuite, state, userRoutes, UserSession, userSuite, type Emitted } from './support.js';

/**
 * The Userid feature, proven through real HTTP requests: the user id and the
 * regeneration that closes session fixation, regenerate(), the lifecycle
 * events, listing and revoking a user's sessions, the userid index, and a
 * UUID user loaded with the session.  CSRF tokens are in csrf.test.ts.
 */

/**
 * The app's user, with a UUID key, as in the README's example.  Its own table:
 * config.test.ts leaves a `user` table that a foreign key of `app_session`
 * points to, which MariaDB would refuse to drop.
 */
const { User, UuidUserid } = uuidUser('uuid_user');
const UuidSession = defineSessionEntity({ name: 'UuidSession', tableName: 'uuid_session', features: [UuidUserid] });

const codec = new CookieCodec(SECRET, 'session');
const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();

/** The secret token a cookie carries (the row id is its SHA-256). */
function tokenOf(cookie: string): Buffer {
  const decoded = codec.decode(cookie, TOKEN_BYTES);
  if (!decoded.ok) throw new Error(`not a session cookie: ${decoded.reason}`);
  return decoded.payload;
}

/** Whether the DDL indexes the userid column of `table`; MariaDB adds the index by ALTER TABLE. */
function indexesUserid(ddl: string, table: string): boolean {
  const plain = ddl.replace(/[`"]/g, '');
  return new RegExp(
    `create index \\w+ on ${table} \\(userid\\)|alter table ${table} add index \\w+ ?\\(userid\\)`,
    'i',
  ).test(plain);
}

/** A reply that removes the session cookie. */
function expectRemoval(reply: Reply): void {
  expect(reply.cookies).toHaveLength(1);
  expect(reply.cookies[0].value).toBe('');
  expect(reply.cookies[0].expiryTime()).toBeLessThan(Date.now());
}

/** Each test logs in its own users, so rows left by earlier tests never match. */
let lastUser = 0;
const newUser = () => 1000 + ++lastUser;

for (const db of databases) {
  describe.skipIf(db.skip)(`Userid on ${db.name}`, () => {
    const s = userSuite(db);
    const { row } = s;

    /** A committed anonymous session holding data and a flash message, as before a login form is sent. */
    async function visitor(): Promise<{ client: Client; id: string; created: number; cookie: string }> {
      const client = s.h.client();
      await client.post('/set', { cart: ['book'] });
      await client.post('/flash', { message: 'welcome' });
      const { id, created } = await state(client);
      return { client, id, created, cookie: (await client.cookie())! };
    }

    /** A client whose new session is logged in as `userid`. */
    async function loggedIn(userid: unknown): Promise<{ client: Client; id: string }> {
      const client = s.h.client();
      const reply = await client.post('/login', { userid });
      expect(reply.cookies).toHaveLength(1);
      return { client, id: reply.json.id };
    }

    /** Events emitted while `fn` ran. */
    async function emitted(fn: () => Promise<unknown>): Promise<Emitted[]> {
      const start = s.events.length;
      await fn();
      return s.events.slice(start);
    }

    describe('the user id', () => {
      test('is null on a new session, which stays clean', async () => {
        const client = s.h.client();
        const reply = await client.get('/whoami');
        expect(reply.json).toEqual({ userid: null });
        expect(reply.cookies).toEqual([]);
      });

      test('alone makes a new session dirty: the row is inserted and a cookie sent, and it reads back', async () => {
        const user = newUser();
        const { client, id } = await loggedIn(user);
        expect((await row(id))?.userid).toEqual({ userid: user });
        expect((await client.get('/whoami')).json).toEqual({ userid: user });
      });

      test('set to null forgets the user; the row stays with a null userid', async () => {
        const { client, id } = await loggedIn(newUser());
        const reply = await client.post('/login', { userid: null });
        expect(reply.json.id).toBe(id);
        expect(reply.cookies).toEqual([]);
        expect((await client.get('/whoami')).json).toEqual({ userid: null });
        expect((await row(id))?.userid).toEqual({ userid: null });
      });
    });

    describe('session fixation is closed: a login regenerates the id', () => {
      test('login on a committed session: new cookie, old row gone, data, flash and created kept', async () => {
        const { client, id, created, cookie } = await visitor();
        const user = newUser();
        s.h.clock.advance(60);
        const reply = await client.post('/login', { userid: user });
        expect(reply.status).toBe(200);
        expect(reply.cookies).toHaveLength(1);
        expect(reply.cookies[0].value).not.toBe(cookie);
        expect(reply.json.id).not.toBe(id);
        expect(await row(id)).toBeNull();
        expect(await row(reply.json.id)).toMatchObject({
          created,
          data: { cart: ['book'] },
          flash: { '': ['welcome'] },
          userid: { userid: user },
        });
        expect(await state(client)).toMatchObject({
          id: reply.json.id,
          isNew: false,
          created,
          data: { cart: ['book'] },
        });
      });

      test('the pre-login cookie no longer opens the session: it gets a clean one and a removal', async () => {
        const { client } = await visitor();
        const beforeLogin = client.snapshot();
        const { id } = (await client.post('/login', { userid: newUser() })).json;
        beforeLogin();
        const replay = await client.get('/state');
        expect(replay.json).toMatchObject({ isNew: true, size: 0 });
        expect(replay.json.id).not.toBe(id);
        expectRemoval(replay);
        // The attacker's replay did not hurt the victim's new session.
        expect(await row(id)).not.toBeNull();
      });

      test('switching to another user regenerates too', async () => {
        const { client, id } = await loggedIn(newUser());
        const other = newUser();
        const reply = await client.post('/login', { userid: other });
        expect(reply.cookies).toHaveLength(1);
        expect(reply.json.id).not.toBe(id);
        expect(await row(id)).toBeNull();
        expect((await client.get('/whoami')).json).toEqual({ userid: other });
      });

      test('setting the same user again does not regenerate', async () => {
        const user = newUser();
        const { client, id } = await loggedIn(user);
        const reply = await client.post('/login', { userid: user });
        expect(reply.json.id).toBe(id);
        expect(reply.cookies).toEqual([]);
        expect(await row(id)).not.toBeNull();
      });

      test('with regenerateOnLogin: false a login keeps the id', async () => {
        const h = await harness(db, { entity: UserSession, options: { regenerateOnLogin: false }, routes: userRoutes });
        try {
          const client = h.client();
          await client.post('/set', { cart: [] });
          const { id } = (await client.get('/state')).json;
          const user = newUser();
          const reply = await client.post('/login', { userid: user });
          expect(reply.json.id).toBe(id);
          expect(reply.cookies).toEqual([]);
          expect((await h.orm.em.fork().findOneOrFail(UserSession, { id })).userid).toEqual({ userid: user });
        } finally {
          await h.close();
        }
      });
    });

    describe('regenerate()', () => {
      test('gives a new id for the same data; the old row is deleted in the same commit', async () => {
        const { client, id, created } = await visitor();
        let reply!: Reply;
        const sql = await s.h.count(async () => (reply = await client.post('/regenerate', {})));
        expect(reply.json.id).not.toBe(id);
        expect(reply.cookies).toHaveLength(1);
        // One transaction holds both the INSERT of the new row and the DELETE of the old one.
        const verbs = sql.map(verb);
        expect(verbs.slice(0, 2)).toEqual(['select', 'begin']);
        expect(verbs.at(-1)).toBe('commit');
        expect(verbs.slice(2, -1).sort()).toEqual(['delete', 'insert']);
        expect(await row(id)).toBeNull();
        expect(await state(client)).toMatchObject({ id: reply.json.id, created, data: { cart: ['book'] } });
      });

      test('a route that regenerates and then fails keeps the old row and cookie, and sends no Set-Cookie', async () => {
        const { client, id, cookie } = await visitor();
        const reply = await client.post('/regenerate', { fail: true });
        expect(reply.status).toBe(500);
        expect(reply.cookies).toEqual([]);
        expect(await client.cookie()).toBe(cookie);
        expect(await row(id)).not.toBeNull();
        expect(await state(client)).toMatchObject({ id, data: { cart: ['book'] } });
      });

      test('on a new session it only changes the id the session is inserted with', async () => {
        const client = s.h.client();
        let reply!: Reply;
        const events = await emitted(async () => (reply = await client.post('/regenerate', { set: { a: 1 } })));
        expect(reply.cookies).toHaveLength(1);
        expect(events).toEqual([{ name: 'session:created', id: reply.json.id }]);
        expect(await state(client)).toMatchObject({ id: reply.json.id, isNew: false, data: { a: 1 } });
      });

      test('on a committed session that holds no data it still gives the session a new id and cookie', async () => {
        const client = s.h.client();
        await client.post('/set', { a: 1 });
        await client.post('/clear');
        const { id } = await state(client);
        let reply!: Reply;
        const events = await emitted(async () => (reply = await client.post('/regenerate', {})));
        expect(events).toEqual([{ name: 'session:regenerated', id: reply.json.id, previousId: id }]);
        expect(await row(id)).toBeNull();
        // The event names a session the client holds: its row exists and the response carries its cookie.
        expect(await row(reply.json.id)).not.toBeNull();
        expect(reply.cookies).toHaveLength(1);
        expect(await state(client)).toMatchObject({ id: reply.json.id, isNew: false });
      });
    });

    describe('lifecycle events, emitted only after a successful commit', () => {
      test('session:created on the insert of a new session, with its id; not on later writes', async () => {
        const client = s.h.client();
        expect(await emitted(() => client.get('/whoami'))).toEqual([]);
        const created = await emitted(() => client.post('/set', { a: 1 }));
        const { id } = await state(client);
        expect(created).toEqual([{ name: 'session:created', id }]);
        expect(await emitted(() => client.post('/set', { a: 2 }))).toEqual([]);
      });

      test('session:regenerated with id and previousId, on regenerate() and on login', async () => {
        const { client, id } = await visitor();
        let reply!: Reply;
        const events = await emitted(async () => (reply = await client.post('/regenerate', {})));
        expect(events).toEqual([{ name: 'session:regenerated', id: reply.json.id, previousId: id }]);
        const login = await emitted(async () => (reply = await client.post('/login', { userid: newUser() })));
        expect(login).toEqual([{ name: 'session:regenerated', id: reply.json.id, previousId: events[0].id }]);
      });

      test("session:destroyed on invalidate(), with reason 'invalidated'", async () => {
        const { client, id } = await visitor();
        expect(await emitted(() => client.post('/invalidate'))).toEqual([
          { name: 'session:destroyed', id, reason: 'invalidated' },
        ]);
      });

      test('regenerate() then invalidate(): the events say the committed session ended, not that it moved', async () => {
        const { client, id } = await visitor();
        let reply!: Reply;
        const events = await emitted(async () => (reply = await client.post('/regenerate', { invalidate: true })));
        expectRemoval(reply);
        expect(await row(id)).toBeNull();
        expect(events).toEqual([{ name: 'session:destroyed', id, reason: 'invalidated' }]);
      });

      test('a route that invalidates and then fails emits nothing and keeps the row', async () => {
        const { client, id } = await visitor();
        let reply!: Reply;
        expect(await emitted(async () => (reply = await client.post('/invalidate-then-fail')))).toEqual([]);
        expect(reply.status).toBe(500);
        expect(await row(id)).not.toBeNull();
      });

      test('no payload carries the cookie or its token', async () => {
        const { client, cookie } = await visitor();
        const events = await emitted(async () => {
          await client.post('/login', { userid: newUser() });
          await client.post('/invalidate');
          await client.post('/set', { again: true });
        });
        expect(events.map((event) => event.name)).toEqual([
          'session:regenerated',
          'session:destroyed',
          'session:created',
        ]);
        const secrets = [cookie, (await client.cookie())!].flatMap((value) => {
          const token = tokenOf(value);
          return [value, token.toString('hex'), token.toString('base64url'), token.toString('base64')];
        });
        for (const event of events) {
          const text = JSON.stringify(event);
          for (const secret of secrets) expect(text).not.toContain(secret);
        }
      });
    });

    describe("a user's sessions", () => {
      /** The same user logged in from three clients, a minute apart, plus another user's client. */
      async function threeDevices() {
        const user = newUser();
        const devices = [];
        for (let i = 0; i < 3; i++) {
          s.h.clock.advance(60);
          devices.push(await loggedIn(user));
        }
        const stranger = await loggedIn(newUser());
        return { user, devices, stranger };
      }

      const isLoggedIn = async (client: Client) => (await client.get('/whoami')).json.userid !== null;

      test('listUserSessions() lists them newest first, with their times, and not another user’s', async () => {
        const { user, devices, stranger } = await threeDevices();
        const { sessions } = (await devices[0].client.get('/sessions')).json;
        expect(sessions.map((session: { id: string }) => session.id)).toEqual(devices.map((d) => d.id).reverse());
        const now = Math.floor(s.h.clock.ms / 1000);
        expect(sessions[0]).toEqual({
          id: devices[2].id,
          created: now,
          lastActivity: null,
          idleExpire: null,
          absoluteExpire: null,
          expiresAt: null,
        });
        expect(sessions.map((session: { created: number }) => session.created)).toEqual([now, now - 60, now - 120]);
        expect(
          (await stranger.client.get('/sessions')).json.sessions.map((session: { id: string }) => session.id),
        ).toEqual([stranger.id]);
        // The middleware answers the same outside a request, e.g. for an admin page.
        expect((await s.h.sessions.listUserSessions(user)).map((session) => session.id)).toEqual(
          devices.map((d) => d.id).reverse(),
        );
      });

      test('an anonymous session lists nothing', async () => {
        const { client } = await visitor();
        expect((await client.get('/sessions')).json).toEqual({ sessions: [] });
      });

      test('revokeUserSessions({ keepCurrent: true }) logs out everywhere but here', async () => {
        const {
          devices: [here, ...others],
          stranger,
        } = await threeDevices();
        const reply = await here.client.post('/revoke', { keepCurrent: true });
        expect(reply.json).toEqual({ count: 2 });
        expect(reply.cookies).toEqual([]);
        for (const other of others) {
          const back = await other.client.get('/whoami');
          expect(back.json).toEqual({ userid: null });
          expectRemoval(back);
          expect(await row(other.id)).toBeNull();
        }
        expect(await isLoggedIn(here.client)).toBe(true);
        expect((await here.client.get('/sessions')).json.sessions.map((session: { id: string }) => session.id)).toEqual(
          [here.id],
        );
        expect(await isLoggedIn(stranger.client)).toBe(true);
      });

      test('revokeUserSessions() logs out everywhere, this client too: its response removes the cookie', async () => {
        const { devices, stranger } = await threeDevices();
        const [here] = devices;
        let reply!: Reply;
        const events = await emitted(async () => (reply = await here.client.post('/revoke', {})));
        expect(reply.json).toEqual({ count: 3 });
        expectRemoval(reply);
        // Every session it deleted is reported, once, after the commit; the stranger's is not.
        const revoked = devices.map(({ id }) => ({ name: 'session:destroyed', id, reason: 'revoked' }));
        expect(events).toHaveLength(3);
        expect(events).toEqual(expect.arrayContaining(revoked));
        for (const device of devices) {
          expect(await isLoggedIn(device.client)).toBe(false);
          expect(await row(device.id)).toBeNull();
        }
        expect(await isLoggedIn(stranger.client)).toBe(true);
      });

      test('a route that revokes and then fails logs nobody out', async () => {
        const { devices } = await threeDevices();
        const reply = await devices[0].client.post('/revoke', { keepCurrent: true, fail: true });
        expect(reply.status).toBe(500);
        for (const device of devices) expect(await isLoggedIn(device.client)).toBe(true);
      });

      test('regenerate() then revoking the others, as on a password change, counts only the others', async () => {
        const {
          devices: [here, ...others],
        } = await threeDevices();
        const reply = await here.client.post('/revoke', { regenerate: true, keepCurrent: true });
        expect(reply.json).toEqual({ count: others.length });
        expect(reply.cookies).toHaveLength(1);
        for (const other of others) expect(await isLoggedIn(other.client)).toBe(false);
        expect(await isLoggedIn(here.client)).toBe(true);
      });

      test('regenerate() then revokeUserSessions() logs this client out too', async () => {
        const { devices } = await threeDevices();
        const [here] = devices;
        let reply!: Reply;
        const events = await emitted(async () => (reply = await here.client.post('/revoke', { regenerate: true })));
        expectRemoval(reply);
        expect(await isLoggedIn(here.client)).toBe(false);
        expect(await row(here.id)).toBeNull();
        // No session moved: the one that ended is the committed one; the others are reported as revoked.
        expect(events).toHaveLength(3);
        expect(events).toEqual(
          expect.arrayContaining(devices.map(({ id }) => ({ name: 'session:destroyed', id, reason: 'revoked' }))),
        );
      });

      test('the middleware revokes outside a request, except a given session', async () => {
        const { user, devices, stranger } = await threeDevices();
        expect(await s.h.sessions.revokeUserSessions(user, { except: devices[1].id })).toBe(2);
        expect(await Promise.all(devices.map((device) => isLoggedIn(device.client)))).toEqual([false, true, false]);
        expect(await isLoggedIn(stranger.client)).toBe(true);
      });
    });

    test('the schema indexes the userid column', async () => {
      const ddl = await s.h.orm.schema.getCreateSchemaSQL();
      expect(indexesUserid(ddl, 'user_session'), ddl).toBe(true);
    });
  });

  describe.skipIf(db.skip)(`without the Userid and Csrf features on ${db.name}`, () => {
    const s = featurelessSuite(db);

    test.each([
      ['read userid', 'Userid'],
      ['set userid', 'Userid'],
      ['listUserSessions', 'Userid'],
      ['revokeUserSessions', 'Userid'],
    ])('%s throws FeatureNotEnabledError naming %s', async (name, feature) => {
      const reply = await s.h.client().get(`/call?name=${encodeURIComponent(name)}`);
      expect(reply.json).toEqual({ feature, message: expect.stringContaining(`needs the ${feature} feature`) });
    });

    test('the middleware’s user-session functions throw it too', async () => {
      // Called from an async function, as an admin tool would: a synchronous throw counts too.
      await expect(async () => s.h.sessions.listUserSessions(1)).rejects.toThrow(FeatureNotEnabledError);
      await expect(async () => s.h.sessions.revokeUserSessions(1)).rejects.toThrow(/needs the Userid feature/);
    });
  });

  describe.skipIf(db.skip)(`a UUID Userid subclass with an eager User on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db, {
        entity: UuidSession,
        entities: [User],
        routes: {
          ...userRoutes,
          'GET /me': (ctx) => {
            const userid = ctx.session.userid;
            const row = ctx.em.getReference(UuidSession, ctx.session.id);
            return { userid, name: row.userid.user?.name ?? null };
          },
        },
      });
    });
    afterAll(() => h?.close());

    /** A User row and a client logged in as it. */
    async function login(name: string): Promise<{ client: Client; userid: string }> {
      const userid = randomUUID();
      const em = h.orm.em.fork();
      em.create(User, { id: userid, name });
      await em.flush();
      const client = h.client();
      await client.post('/set', { a: 1 });
      expect((await client.post('/login', { userid })).cookies).toHaveLength(1);
      return { client, userid };
    }

    test('is recognised as the Userid feature: the UUID reads back, and the user’s sessions list', async () => {
      const { client, userid } = await login('ann');
      expect((await client.get('/whoami')).json).toEqual({ userid });
      const { id } = (await client.get('/state')).json;
      expect((await client.get('/sessions')).json.sessions.map((session: { id: string }) => session.id)).toEqual([id]);
    });

    test('a read-only request loads the logged-in user with the session in one statement', async () => {
      const { client, userid } = await login('bea');
      let reply!: Reply;
      const sql = await h.count(async () => (reply = await client.get('/me')));
      expect(reply.json).toEqual({ userid, name: 'bea' });
      expect(sql).toHaveLength(1);
      expect(sql[0]).toMatch(/^select .* join /i);
    });

    test('the schema indexes the UUID userid column', async () => {
      const ddl = await h.orm.schema.getCreateSchemaSQL();
      expect(indexesUserid(ddl, 'uuid_session'), ddl).toBe(true);
    });
  });
}
