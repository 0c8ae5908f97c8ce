import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { defineSessionEntity, RenewalTimeout, type SessionEvent } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, type Harness, type Route } from './support/app.js';
import type { Client, Reply } from './support/http.js';
import { replica } from './support/replica.js';
import { uuidUser } from './support/uuid-user.js';

/**
 * Sessions on an app whose MikroORM has a PostgreSQL read replica (`replicas`, with `preferReadReplicas` on, its
 * default): MikroORM sends reads outside a transaction to the replica, but every read of a session must go to the
 * primary, or a login is lost, a write reads back old, a revoked or invalidated session comes back.
 *
 * The replica is real (support/replica.ts) and replays every commit REPLICA_DELAY seconds late. Each test starts from
 * state the replica has replayed ("settled" below, made before the tests and waited for once), changes it, and checks
 * on the replica itself that it still shows the old state, before and after the requests that must not see it: a
 * test that passed while the replica had caught up would prove nothing. The app's clock is still the fake one.
 *
 * The session entity is the README's UUID user loaded with the session: an eager relation, so MikroORM's findOne()
 * loads the row, not the prepared SELECT.
 */

const { User, UuidUserid } = uuidUser('replica_user');

const Session = defineSessionEntity({
  name: 'ReplicaSession',
  tableName: 'replica_session',
  features: [UuidUserid, RenewalTimeout],
});

const TIMEOUT = 600;
const RENEWAL = { renewalTimeout: TIMEOUT, renewalTryEvery: 5 };

const routes: Record<string, Route> = {
  /** Logs a new client in as `userid`, with `data` in its session; answers the row id. */
  'POST /login': (ctx, body) => {
    for (const [key, value] of Object.entries(body.data ?? {})) ctx.session.set(key, value);
    ctx.session.userid = body.userid;
    return { id: ctx.session.id };
  },
  /** The user id and the User loaded with the session, as in the README. */
  'GET /me': (ctx) => {
    const userid = ctx.session.userid;
    const row = ctx.session.isNew ? undefined : ctx.em.getReference(Session, ctx.session.id);
    return { userid, name: row?.userid.user?.name ?? null };
  },
  'GET /sessions': async (ctx) => ({
    ids: (await ctx.session.listUserSessions()).map((session) => session.id),
  }),
  'POST /revoke': async (ctx, body) => ({
    count: await ctx.session.revokeUserSessions(body.keepCurrent ? { keepCurrent: true } : undefined),
  }),
  /** The app's own read, outside a transaction: MikroORM serves it from the replica. */
  'GET /users': async (ctx) => ({ names: (await ctx.em.find(User, {})).map((user) => user.name) }),
};

const postgresql = databases.find((db) => db.name === 'postgresql')!;
const server = replica.server;
afterAll(() => server?.stop());

describe.skipIf(replica.skip)('sessions on an app whose MikroORM reads from a PostgreSQL replica', () => {
  let h: Harness;
  /** The same app with the renewal timeout on, over the same ORM's tables and a clock of its own. */
  let renewing: Harness;
  const violations: string[] = [];

  /** State made before the tests, which the replica has replayed by the time they run: the old state. */
  const setups: (() => Promise<void>)[] = [];
  function settled<T>(make: () => Promise<T>): () => T {
    let made: { value: T } | undefined;
    setups.push(async () => {
      made = { value: await make() };
    });
    return () => made!.value;
  }

  beforeAll(async () => {
    const orm = { replicas: [{ host: server!.host, port: server!.port }] };
    h = await harness(postgresql, { entity: Session, entities: [User], routes, orm });
    renewing = await harness(postgresql, { entity: Session, entities: [User], routes, orm, options: RENEWAL });
    renewing.app.on('session:renewal-violation', (event: SessionEvent) => violations.push(event.id));
    for (const setup of setups) await setup();
    await server!.catchUp();
  });
  afterAll(async () => {
    await h?.close();
    await renewing?.close();
  });

  /** A User row, written on the primary. */
  async function newUser(name = 'ann'): Promise<string> {
    const em = h.orm.em.fork();
    const id = randomUUID();
    em.create(User, { id, name });
    await em.flush();
    return id;
  }

  /** A new client logged in as `userid`, and its session's row id. */
  async function loggedIn(userid: string, data: Record<string, unknown> = {}, app = h) {
    const client = app.client();
    const reply = await client.post('/login', { userid, data });
    expect(reply.status).toBe(200);
    return { client, id: reply.json.id as string };
  }

  /** The session row as the replica shows it now, or undefined. */
  async function onReplica(id: string) {
    const rows = await server!.execute<{ userid: string | null; k: string | null; renewal_next: string | null }>(
      `select userid, data->>'k' as k, renewal_next from replica_session where id = ?`,
      [id],
    );
    return rows[0];
  }

  /** The same row on the primary. */
  async function onPrimary(id: string) {
    const rows = await h.orm.em
      .getConnection('write')
      .execute<{ userid: string | null; k: string | null; renewal_next: string | null }[]>(
        `select userid, data->>'k' as k, renewal_next from replica_session where id = ?`,
        [id],
        'all',
      );
    return rows[0];
  }

  const whoami = async (client: Client) => (await client.get('/me')).json.userid as string | null;

  test('the app’s ORM reads from the replica, which lags: a User just written is not there yet', async () => {
    const [read] = await h.orm.em
      .getConnection('read')
      .execute('select pg_is_in_recovery() as standby, inet_server_port() as port');
    expect(read).toEqual({ standby: true, port: server!.port });
    const [write] = await h.orm.em.getConnection('write').execute('select pg_is_in_recovery() as standby');
    expect(write).toEqual({ standby: false });

    const name = `user-${randomUUID()}`;
    const id = await newUser(name);
    expect(await server!.execute('select name from replica_user where id = ?', [id])).toEqual([]);
    // A read of the app's own, in a route, outside a transaction: MikroORM still sends it to the replica.
    const client = h.client();
    expect((await client.get('/users')).json.names).not.toContain(name);
    expect(await server!.execute('select name from replica_user where id = ?', [id])).toEqual([]);

    // Once the replica has replayed the insert, the same read finds the user.
    await server!.catchUp();
    expect((await client.get('/users')).json.names).toContain(name);
  });

  test('a login sticks: the next request is logged in, with its User loaded', async () => {
    const userid = await newUser('bea');
    const { client, id } = await loggedIn(userid);
    expect(await onReplica(id)).toBeUndefined();
    expect((await client.get('/me')).json).toEqual({ userid, name: 'bea' });
    expect(await onReplica(id)).toBeUndefined();
  });

  const writer = settled(async () => loggedIn(await newUser('cid'), { k: 'old' }));

  test('a value written is read back, not the replica’s older copy, and a second write keeps the first', async () => {
    const { client, id } = writer();
    expect((await client.post('/set', { k: 'new' })).status).toBe(200);
    expect(await onPrimary(id)).toMatchObject({ k: 'new' });
    expect(await onReplica(id)).toMatchObject({ k: 'old' });
    expect((await client.get('/get?key=k')).json).toEqual({ value: 'new' });
    expect((await client.post('/set', { j: 2 })).status).toBe(200);
    expect((await client.get('/get?key=k')).json).toEqual({ value: 'new' });
    expect((await client.get('/get?key=j')).json).toEqual({ value: 2 });
    expect(await onReplica(id)).toMatchObject({ k: 'old' });
  });

  /** A user logged in on two clients before the test. */
  const twoDevices = () =>
    settled(async () => {
      const userid = await newUser('dee');
      return { userid, here: await loggedIn(userid), other: await loggedIn(userid) };
    });

  const keeping = twoDevices();

  test('revokeUserSessions({ keepCurrent: true }) counts and logs out the device that just logged in; revoked cookies stay dead', async () => {
    const { userid, here, other } = keeping();
    const fresh = await loggedIn(userid);
    const reply = await here.client.post('/revoke', { keepCurrent: true });
    expect(await onReplica(other.id)).toMatchObject({ userid });
    expect(await onReplica(fresh.id)).toBeUndefined();
    expect(reply.json).toEqual({ count: 2 });
    expect(await whoami(other.client)).toBeNull();
    expect(await whoami(fresh.client)).toBeNull();
    expect(await whoami(here.client)).toBe(userid);
    expect(await onReplica(other.id)).toMatchObject({ userid });
  });

  const everywhere = twoDevices();

  test('revokeUserSessions() logs out everywhere, this client’s old cookie too, and counts every session', async () => {
    const { userid, here, other } = everywhere();
    const fresh = await loggedIn(userid);
    const restore = here.client.snapshot();
    const reply = await here.client.post('/revoke', {});
    expect(await onReplica(here.id)).toMatchObject({ userid });
    expect(reply.json).toEqual({ count: 3 });
    restore();
    for (const device of [here, other, fresh]) expect(await whoami(device.client)).toBeNull();
    expect(await onReplica(other.id)).toMatchObject({ userid });
  });

  const administered = twoDevices();

  test('the middleware’s revokeUserSessions() logs out everywhere from outside a request', async () => {
    const { userid, here, other } = administered();
    const fresh = await loggedIn(userid);
    expect(await h.sessions.revokeUserSessions(userid)).toBe(3);
    expect(await onReplica(here.id)).toMatchObject({ userid });
    for (const device of [here, other, fresh]) expect(await whoami(device.client)).toBeNull();
    expect(await onReplica(other.id)).toMatchObject({ userid });
  });

  const listed = settled(async () => {
    const userid = await newUser('eve');
    return { userid, device: await loggedIn(userid) };
  });

  test('listUserSessions(), on ctx.session and on the middleware, includes the device that just logged in', async () => {
    const { userid, device } = listed();
    h.clock.advance(60);
    const fresh = await loggedIn(userid);
    expect(await onReplica(fresh.id)).toBeUndefined();
    expect((await device.client.get('/sessions')).json).toEqual({ ids: [fresh.id, device.id] });
    expect((await h.sessions.listUserSessions(userid)).map((session) => session.id)).toEqual([fresh.id, device.id]);
    expect(await onReplica(fresh.id)).toBeUndefined();
  });

  const invalidated = settled(async () => loggedIn(await newUser('fay'), { k: 'secret' }));

  test('invalidate(): the old cookie gets no session', async () => {
    const { client, id } = invalidated();
    const restore = client.snapshot();
    const reply: Reply = await client.post('/invalidate');
    expect(reply.status).toBe(200);
    expect(await onPrimary(id)).toBeUndefined();
    expect(await onReplica(id)).toMatchObject({ k: 'secret' });
    restore();
    expect((await client.get('/get?key=k')).json).toEqual({ value: null });
    expect(await whoami(client)).toBeNull();
    expect(await onReplica(id)).toMatchObject({ k: 'secret' });
  });

  const renewed = settled(async () => loggedIn(await newUser('gus'), { k: 'kept' }, renewing));

  test('renewal: the acknowledgement of an offered cookie keeps the session', async () => {
    const { client, id } = renewed();
    renewing.clock.advance(TIMEOUT);
    const offer = await client.get('/get?key=k');
    expect(offer.json).toEqual({ value: 'kept' });
    expect(offer.cookies).toHaveLength(1);
    expect((await onPrimary(id))!.renewal_next).not.toBeNull();
    expect(await onReplica(id)).toMatchObject({ renewal_next: null });
    // The client's jar holds the offered cookie: this request acknowledges it.
    const acknowledged = await client.get('/get?key=k');
    expect({ reply: acknowledged.json, violations }).toEqual({ reply: { value: 'kept' }, violations: [] });
    expect(await onPrimary(id)).toMatchObject({ renewal_next: null });
    expect((await client.get('/get?key=k')).json).toEqual({ value: 'kept' });
    expect(await onReplica(id)).toMatchObject({ renewal_next: null });
  });
});
