import { randomBytes } from 'node:crypto';
import { IsolationLevel } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CookieCodec, generateSecretKey } from '../../src/codec.js';
import {
  ConfigurationError,
  defineSessionEntity,
  RenewalTimeout,
  type SessionEvent,
  type SessionOptions,
} from '../../src/index.js';
import { sessionIdOf, TOKEN_BYTES } from '../../src/token.js';
import { databases, type TestDatabase } from '../support/databases.js';
import { Gate, harness, SECRET, type Harness } from '../support/app.js';
import type { Client, Reply } from '../support/http.js';
import { startupAttempts } from './support.js';

/**
 * The renewal protocol (OWASP renewal timeout with theft detection), proven
 * through real HTTP requests: offer, retry, acknowledgement, grace window,
 * and the violation that logs out both the thief and the owner.
 */
const RenewalSession = defineSessionEntity({
  name: 'RenewalSession',
  tableName: 'renewal_session',
  features: [RenewalTimeout],
});
const TIMEOUT = 600;
const TRY_EVERY = 5;
const RENEWAL = { renewalTimeout: TIMEOUT, renewalTryEvery: TRY_EVERY };

// The test reads the cookie the way the server does: token (16 bytes), then renewal id (16 bytes).
const codec = new CookieCodec(SECRET, 'session');
const PAYLOAD = TOKEN_BYTES + 16;

function payloadOf(value: string): Buffer {
  const decoded = codec.decode(value, PAYLOAD);
  if (!decoded.ok) throw new Error(`not a session cookie: ${decoded.reason}`);
  return decoded.payload;
}

/** The renewal id (hex) a cookie carries. */
const renewalIdOf = (value: string) => payloadOf(value).subarray(TOKEN_BYTES).toString('hex');

/** The row id of the session a cookie names (the hash of its token). */
const sessionOf = (value: string) => sessionIdOf(payloadOf(value).subarray(0, TOKEN_BYTES));

/** The genuine token with another renewal id: what a forger holding the cookie could make with the key. */
const withRenewalId = (value: string, id: Buffer) =>
  codec.encode(Buffer.concat([payloadOf(value).subarray(0, TOKEN_BYTES), id]));

/** A request carrying this exact cookie value, whatever the jar holds (a request already in flight, a thief). */
const presenting = (value: string): RequestInit => ({ headers: { cookie: `session=${value}` } });

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();

/** A harness per describe block, the violations it emitted, and the steps of the protocol as helpers. */
function suite(db: TestDatabase, options: Partial<SessionOptions>) {
  let gate = new Gate();
  const s = {
    h: undefined as unknown as Harness,
    /** Row ids of session:renewal-violation events. */
    violations: [] as string[],

    now: () => Math.floor(s.h.clock.ms / 1000),

    /** The renewal columns of a session's row, or null once it is deleted. */
    async renewal(id: string): Promise<RenewalTimeout | null> {
      const row = await s.h.orm.em.fork().findOne(RenewalSession, { id });
      return row ? { ...row.renewal } : null;
    },

    /** A logged-in browser: a committed session holding user 'ann'. */
    async login(): Promise<{ client: Client; id: string; cookie: string }> {
      const client = s.h.client();
      await client.post('/set', { user: 'ann' });
      const cookie = (await client.cookie())!;
      return { client, id: sessionOf(cookie), cookie };
    },

    /** A request that proves the session still works: it reads the user back. */
    async read(client: Client, init?: RequestInit): Promise<Reply> {
      const reply = await client.get('/get?key=user', init);
      expect(reply.status).toBe(200);
      expect(reply.json.value).toBe('ann');
      return reply;
    },

    /** Moves to the renewal time; returns the offered cookie, which the client's jar now holds. */
    async offer(client: Client): Promise<string> {
      s.h.clock.advance(TIMEOUT);
      const reply = await s.read(client);
      expect(reply.cookies).toHaveLength(1);
      return reply.cookies[0].value;
    },

    /**
     * Sends `count` requests presenting `cookie`, holds them all after their SELECT, then lets them finish together.
     */
    async parallel(client: Client, cookie: string, count: number): Promise<Reply[]> {
      gate = new Gate();
      const requests = Array.from({ length: count }, () => client.get('/held', presenting(cookie)));
      await gate.reached(count);
      gate.open();
      return Promise.all(requests);
    },
  };
  beforeAll(async () => {
    s.h = await harness(db, {
      entity: RenewalSession,
      options,
      routes: {
        'GET /held': async (ctx) => {
          await gate.pass();
          return { value: ctx.session.get('user') ?? null };
        },
      },
    });
    s.h.app.on('session:renewal-violation', (event: SessionEvent) => s.violations.push(event.id));
  });
  afterAll(() => s.h?.close());
  return s;
}

type Suite = ReturnType<typeof suite>;

/** Several requests of one browser in flight at the renewal moment, and at the acknowledgement. */
function parallelTests(s: Suite) {
  test('parallel requests when the renewal is due: exactly one carries the offer, all succeed, the offer is the row’s', async () => {
    const { client, id, cookie } = await s.login();
    s.h.clock.advance(TIMEOUT);
    const replies = await s.parallel(client, cookie, 5);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(replies.map((r) => r.json?.value)).toEqual(['ann', 'ann', 'ann', 'ann', 'ann']);
    const offers = replies.filter((r) => r.cookies.length > 0);
    expect(offers).toHaveLength(1);
    const offered = renewalIdOf(offers[0].cookies[0].value);
    expect((await s.renewal(id))!.renewalNext).toBe(offered);

    // The client holds that offer, so it can acknowledge it.
    expect(renewalIdOf((await client.cookie())!)).toBe(offered);
    await s.read(client);
    expect((await s.renewal(id))!.renewalId).toBe(offered);
  });

  test('parallel acknowledgements all succeed and the row ends acknowledged', async () => {
    const { client, id, cookie } = await s.login();
    const offered = await s.offer(client);
    const replies = await s.parallel(client, offered, 5);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(replies.flatMap((r) => r.cookies)).toEqual([]);
    expect(await s.renewal(id)).toMatchObject({
      renewalId: renewalIdOf(offered),
      renewalNext: null,
      renewalPrev: renewalIdOf(cookie),
    });
    expect(s.violations).not.toContain(id);
  });
}

for (const db of databases) {
  describe.skipIf(db.skip)(`renewal timeout on ${db.name}`, () => {
    const s = suite(db, RENEWAL);

    test('a new session’s first cookie carries the renewal id stored in its row', async () => {
      const { id, cookie } = await s.login();
      expect(await s.renewal(id)).toEqual({
        renewalId: renewalIdOf(cookie),
        renewalNext: null,
        renewalPrev: null,
        renewalDue: s.now() + TIMEOUT,
        renewalGraceEnd: null,
      });
    });

    test('no cookie before renewalTimeout; at renewalTimeout a new renewal id is offered and recorded', async () => {
      const { client, id, cookie } = await s.login();
      s.h.clock.advance(TIMEOUT - 1);
      expect((await s.read(client)).cookies).toEqual([]);
      expect((await s.renewal(id))!.renewalNext).toBeNull();

      s.h.clock.advance(1);
      const reply = await s.read(client);
      expect(reply.cookies).toHaveLength(1);
      const offered = reply.cookies[0].value;
      expect(offered).not.toBe(cookie);
      // Same session (token), new renewal id.
      expect(sessionOf(offered)).toBe(id);
      expect(renewalIdOf(offered)).not.toBe(renewalIdOf(cookie));
      expect(await s.renewal(id)).toMatchObject({
        renewalId: renewalIdOf(cookie),
        renewalNext: renewalIdOf(offered),
        renewalDue: s.now() + TRY_EVERY,
      });
    });

    test('an offer the client did not store: the old id keeps working and the same id is offered again every renewalTryEvery seconds', async () => {
      const { client, id, cookie } = await s.login();
      const beforeOffer = client.snapshot();
      const offered = renewalIdOf(await s.offer(client));
      beforeOffer(); // the browser dropped the offered cookie

      // Still the old id, accepted until acknowledged, and no offer before the retry time.
      s.h.clock.advance(TRY_EVERY - 1);
      expect((await s.read(client)).cookies).toEqual([]);

      s.h.clock.advance(1);
      const retry = await s.read(client);
      expect(retry.cookies).toHaveLength(1);
      // The same id again: a late acknowledgement of the first offer still counts.
      expect(renewalIdOf(retry.cookies[0].value)).toBe(offered);
      expect(await s.renewal(id)).toMatchObject({
        renewalId: renewalIdOf(cookie),
        renewalNext: offered,
        renewalDue: s.now() + TRY_EVERY,
      });
    });

    test('presenting the offered id acknowledges it: the row switches and no further cookie is sent', async () => {
      const { client, id, cookie } = await s.login();
      const offered = renewalIdOf(await s.offer(client));

      expect((await s.read(client)).cookies).toEqual([]);
      expect(await s.renewal(id)).toEqual({
        renewalId: offered,
        renewalNext: null,
        renewalPrev: renewalIdOf(cookie),
        renewalDue: s.now() + TIMEOUT,
        renewalGraceEnd: s.now() + TRY_EVERY,
      });
      s.h.clock.advance(TRY_EVERY);
      expect((await s.read(client)).cookies).toEqual([]);
    });

    test('after the grace window, the pre-acknowledgement cookie destroys the session: thief and owner are both logged out', async () => {
      const { client, id, cookie: stolen } = await s.login();
      await s.offer(client);
      await s.read(client); // acknowledged
      s.h.clock.advance(TRY_EVERY);

      const thief = s.h.client();
      await thief.setCookie(stolen);
      const theft = await thief.get('/state');
      expect(theft.status).toBe(200);
      expect(theft.json).toMatchObject({ isNew: true, size: 0 });
      expect(theft.cookies.map((c) => c.value)).toEqual(['']); // removal
      expect(await s.renewal(id)).toBeNull();
      expect(s.violations).toContain(id);

      // The owner's current cookie names a deleted row: its session is gone too.
      const owner = await client.get('/state');
      expect(owner.json).toMatchObject({ isNew: true, size: 0 });
      expect(owner.cookies.map((c) => c.value)).toEqual(['']);
    });

    test('within the grace window, the pre-acknowledgement cookie (a parallel request of the same browser) is accepted', async () => {
      const { client, id, cookie: old } = await s.login();
      const offered = renewalIdOf(await s.offer(client));
      await s.read(client); // acknowledged

      for (const delay of [0, TRY_EVERY - 1]) {
        s.h.clock.advance(delay);
        // Neither an offer nor a removal.
        expect((await s.read(client, presenting(old))).cookies).toEqual([]);
      }
      expect(await s.renewal(id)).toMatchObject({ renewalId: offered, renewalNext: null });
      expect(s.violations).not.toContain(id);
      await s.read(client);
    });

    test('a genuine token with an unknown renewal id is a violation', async () => {
      const { client, id, cookie } = await s.login();
      const forged = withRenewalId(cookie, randomBytes(16));
      const reply = await s.h.client().get('/state', presenting(forged));
      expect(reply.json).toMatchObject({ isNew: true, size: 0 });
      expect(reply.cookies.map((c) => c.value)).toEqual(['']);
      expect(await s.renewal(id)).toBeNull();
      expect(s.violations).toContain(id);
      expect((await client.get('/state')).json).toMatchObject({ isNew: true, size: 0 });
    });

    parallelTests(s);

    test('statement budget: a read not due is one SELECT; offer and acknowledgement are each one targeted UPDATE of the renewal columns', async () => {
      const { client } = await s.login();
      const quiet = await s.h.count(() => s.read(client));
      expect(quiet.map(verb)).toEqual(['select']);

      s.h.clock.advance(TIMEOUT);
      const offering = await s.h.count(() => s.read(client));
      expect(offering.map(verb)).toEqual(['select', 'update']);
      expect(offering[1]).toMatch(/set [`"]renewal_next[`"] = \?, [`"]renewal_due[`"] = \? where /);

      const acknowledging = await s.h.count(() => s.read(client));
      expect(acknowledging.map(verb)).toEqual(['select', 'update']);
      expect(acknowledging[1]).toMatch(
        /set [`"]renewal_id[`"] = \?, [`"]renewal_next[`"] = \?, [`"]renewal_prev[`"] = \?/,
      );

      // Not writes of the session: no data, no version, so they cannot conflict with one.
      for (const update of [offering[1], acknowledging[1]]) expect(update).not.toMatch(/[`"](data|flash|version)[`"]/);
    });
  });

  describe.skipIf(db.skip)(`renewal embedded but renewalTimeout null on ${db.name}`, () => {
    const s = suite(db, {});

    test('no renewal ever happens and an unknown renewal id is not a violation', async () => {
      const { client, id, cookie } = await s.login();
      s.h.clock.advance(100 * TIMEOUT);
      expect((await s.read(client)).cookies).toEqual([]);

      const forged = withRenewalId(cookie, randomBytes(16));
      expect((await s.read(s.h.client(), presenting(forged))).cookies).toEqual([]);
      expect(await s.renewal(id)).toMatchObject({
        renewalId: renewalIdOf(cookie),
        renewalNext: null,
        renewalDue: null,
      });
      expect(s.violations).toEqual([]);
    });
  });

  describe.skipIf(db.skip)(`renewal across a key rotation on ${db.name}`, () => {
    // The browser's cookie was made under the previous key: the server re-issues it under the first key of the ring.
    const previous = generateSecretKey();
    const s = suite(db, { ...RENEWAL, secret: [SECRET, previous] });

    test('a cookie re-issued in the grace window carries the current renewal id, not the one about to die', async () => {
      const { client, id, cookie } = await s.login();
      const underPreviousKey = new CookieCodec(previous, 'session').encode(payloadOf(cookie));
      await client.setCookie(underPreviousKey);
      const offered = await s.offer(client);
      await s.read(client); // acknowledged

      // A request the browser sent before it stored the offer arrives late: accepted, and its cookie re-issued (stale
      // key).
      const late = await s.read(client, presenting(underPreviousKey));
      expect(late.cookies).toHaveLength(1);
      // The browser stores this cookie: it must carry the acknowledged id, since the previous one dies with the grace
      // window.
      expect(renewalIdOf(late.cookies[0].value)).toBe(renewalIdOf(offered));

      s.h.clock.advance(TRY_EVERY);
      await s.read(client); // the owner is still logged in
      expect(s.violations).not.toContain(id);
    });
  });
}

// Transaction mode: the renewal UPDATEs run inside each request's transaction.
// SQLite has one connection, so requests held in open transactions cannot overlap there.
for (const db of databases.filter((db) => db.name !== 'sqlite')) {
  for (const isolationLevel of [
    IsolationLevel.READ_COMMITTED,
    IsolationLevel.REPEATABLE_READ,
    IsolationLevel.SERIALIZABLE,
  ]) {
    describe.skipIf(db.skip)(`renewal on ${db.name}, transaction mode, ${isolationLevel}`, () => {
      parallelTests(suite(db, { ...RENEWAL, transaction: { isolationLevel } }));
    });
  }
}

describe('start-up errors of the renewal timeout', () => {
  const attempt = startupAttempts();

  test.each([
    ['renewalTryEvery 40000', attempt({ renewalTryEvery: 40_000 }), /renewalTryEvery must be at most 32767 seconds/],
  ])('%s', (_, call, message) => {
    expect(call).toThrow(ConfigurationError);
    expect(call).toThrow(message);
  });
});
