import { randomUUID } from 'node:crypto';
import { defineEntity, p, type MikroORM } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigurationError, SessionBase, session, type SessionOptions } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, Item, SECRET, Session } from './support/app.js';

/** The app's user, with a UUID key, as in the seed's example. */
const User = defineEntity({
  name: 'User',
  properties: { id: p.uuid().primary(), name: p.string() },
});

/**
 * A session entity written by hand: the library's base plus app columns, in
 * the app's table, with the user eagerly loaded in the same SELECT.
 */
const AppSession = defineEntity({
  name: 'AppSession',
  tableName: 'app_session',
  extends: SessionBase,
  properties: {
    device: p.string().nullable(),
    user: () => p.manyToOne(User).nullable().eager(),
  },
});

/** Looks like a session entity but does not extend SessionBase (no version hook). */
const Lookalike = defineEntity({
  name: 'Lookalike',
  properties: {
    id: p.string().primary(),
    created: p.bigint('number'),
    version: p.integer().concurrencyCheck(),
    data: p.json(),
    flash: p.json(),
  },
});

const sqlite = databases.find((db) => db.name === 'sqlite')!;

describe('configuration errors are thrown by session() and say what to fix', () => {
  let orm: MikroORM;
  beforeAll(async () => {
    orm = await sqlite.init([Session, Item, Lookalike]);
  });
  afterAll(() => orm.close(true));

  const attempt = (options: Partial<SessionOptions> & Record<string, unknown>) => () =>
    session({ orm, entity: Session, secret: SECRET, ...options } as SessionOptions);

  test.each([
    ['no options', () => session(undefined as any), /options must be an object/],
    ['no orm', attempt({ orm: undefined }), /option orm: expected an initialised MikroORM/],
    ['an orm that is not MikroORM', attempt({ orm: {} as any }), /option orm/],
    ['no secret', attempt({ secret: undefined }), /option secret is required.*generateSecretKey/],
    [
      'a short secret',
      attempt({ secret: Buffer.alloc(8).toString('base64url') }),
      /secret: a key must be 16, 24 or 32 bytes/,
    ],
    [
      'an entity the ORM does not know',
      attempt({ entity: AppSession }),
      /AppSession is not known to this MikroORM instance/,
    ],
    ['an app entity', attempt({ entity: Item }), /Item is not a session entity: created must be/],
    [
      'a lookalike without the base',
      attempt({ entity: Lookalike }),
      /Lookalike is not a session entity: it must extend SessionBase/,
    ],
    ['an unknown option', attempt({ cookieMaxage: 10 }), /unknown option cookieMaxage/],
    ['emKey "session"', attempt({ emKey: 'session' }), /option emKey/],
    ['a clock that is not a function', attempt({ clock: 5 as any }), /option clock/],
    ['lazy "yes"', attempt({ lazy: 'yes' as any }), /option lazy/],
    ['transaction "serializable"', attempt({ transaction: 'serializable' as any }), /option transaction/],
    ['maxSize 0', attempt({ maxSize: 0 }), /option maxSize.*\(got 0\)/],
    [
      'cookieMaxAge 1.5',
      attempt({ cookieMaxAge: 1.5 }),
      /invalid option cookieMaxAge: cookieMaxAge must be a whole number of seconds \(got 1\.5\)/,
    ],
    ['cookieMaxAge 0', attempt({ cookieMaxAge: 0 }), /cookieMaxAge must be at least 1 second/],
    ['cookiePath "x"', attempt({ cookiePath: 'x' }), /cookiePath must start with "\/"/],
    ['cookieDomain ""', attempt({ cookieDomain: '' }), /cookieDomain must be non-empty or null/],
    ['cookieName "a b"', attempt({ cookieName: 'a b' }), /cookieName must be an RFC 2616 token/],
    ['cookieSameSite "none" without Secure', attempt({ cookieSameSite: 'none' }), /"none" requires cookieSecure/],
    [
      'a __Host- name on a path',
      attempt({ cookieName: '__Host-sid', cookieSecure: true, cookiePath: '/app' }),
      /"__Host-" cookieName requires/,
    ],
    ['cookieSecure "yes"', attempt({ cookieSecure: 'yes' as any }), /cookieSecure must be true, false or "auto"/],
  ])('%s', (_, call, message) => {
    expect(call).toThrow(ConfigurationError);
    expect(call).toThrow(message);
  });

  test('valid options build a middleware, and settings come back as given', () => {
    expect(
      attempt({ cookieName: '__Host-sid', cookieSecure: 'auto', cookieSameSite: 'none', cookieMaxAge: 3600 })(),
    ).toBeTypeOf('function');
  });
});

for (const db of databases) {
  describe.skipIf(db.skip)(`a hand-written session entity on ${db.name}`, () => {
    let h: Awaited<ReturnType<typeof harness>>;
    beforeAll(async () => {
      h = await harness(db, {
        entity: AppSession,
        entities: [User],
        routes: {
          'POST /login': async (ctx, body) => {
            const user = ctx.em.create(User, { id: randomUUID(), name: body.name });
            ctx.session.set('since', 1);
            const row = await ctx.em.findOneOrFail(AppSession, { id: ctx.session.id });
            row.user = user;
            return { ok: true };
          },
          'GET /me': async (ctx) => {
            ctx.session.get('since');
            const row = ctx.em.getReference(AppSession, ctx.session.id);
            return { name: row.user?.name ?? null };
          },
          'POST /device': async (ctx, body) => {
            ctx.session.set('seen', true);
            // The app's own column on the same row, written in the same flush.
            const row = await ctx.em.findOne(AppSession, { id: ctx.session.id });
            if (row) row.device = body.device;
            return { ok: true };
          },
        },
      });
    });
    afterAll(() => h?.close());

    test('works like defineSessionEntity() and keeps the app column', async () => {
      const client = h.client();
      await client.post('/set', { a: 1 });
      expect((await client.get('/get?key=a')).json.value).toBe(1);
      await client.post('/device', { device: 'phone' });
      const id = (await client.get('/state')).json.id;
      const row = await h.orm.em.fork().findOneOrFail(AppSession, { id });
      expect(row).toMatchObject({ device: 'phone', data: { a: 1, seen: true } });
      const tables = await h.orm.em.fork().getConnection().execute(
        {
          sqlite: "select name from sqlite_master where name = 'app_session'",
          // Only this database's schema: other databases on the server may hold their own app_session.
          postgresql:
            "select table_name from information_schema.tables where table_name = 'app_session' and table_schema = current_schema()",
          mariadb:
            "select table_name from information_schema.tables where table_name = 'app_session' and table_schema = database()",
        }[db.name],
      );
      expect(tables).toHaveLength(1);
    });

    test("with the ORM's disableIdentityMap, the row findOne() loads is still saved", async () => {
      const dim = await harness(db, { entity: AppSession, entities: [User], orm: { disableIdentityMap: true } });
      try {
        const client = dim.client();
        await client.post('/set', { a: 1 });
        await client.post('/set', { a: 2 });
        expect((await client.get('/get?key=a')).json.value).toBe(2);
        const id = (await client.get('/state')).json.id;
        expect(await dim.orm.em.fork().findOne(AppSession, { id })).toMatchObject({ version: 2, data: { a: 2 } });
      } finally {
        await dim.close();
      }
    });

    test('an eager relation to the app user loads with the session in one SELECT', async () => {
      const client = h.client();
      await client.post('/set', { a: 1 });
      expect((await client.post('/login', { name: 'ann' })).status).toBe(200);
      let reply: any;
      const sql = await h.count(async () => (reply = await client.get('/me')));
      expect(reply.json).toEqual({ name: 'ann' });
      expect(sql).toHaveLength(1);
      expect(sql[0]).toMatch(/^select .* join /i);
    });
  });
}
