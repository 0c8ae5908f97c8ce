import { randomBytes } from 'node:crypto';
import type { MikroORM } from '@mikro-orm/core';
import fc from 'fast-check';
import { Cookie } from 'tough-cookie';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CookieCodec } from '../src/codec.js';
import {
  ConfigurationError,
  generateSecretKey,
  SessionError,
  session,
  type InvalidCookieEvent,
  type SessionOptions,
} from '../src/index.js';
import { TOKEN_BYTES } from '../src/token.js';
import { databases, type TestDatabase } from './support/databases.js';
import { harness, Item, routes, SECRET, Session, type Harness, type Route } from './support/app.js';
import type { Reply } from './support/http.js';

/*
 * The cookie envelope as the README documents it:
 *   base64url( version:1 | key id:4 | iv:12 | ciphertext | tag:16 )
 * For the 16-byte session token that is 49 bytes, 66 characters.  The tests
 * derive what a changed byte must give from this layout, not from the codec.
 */
const ENVELOPE_BYTES = 1 + 4 + 12 + TOKEN_BYTES + 16;
const KEY_ID = { start: 1, end: 5 };
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

type Rejection = { name: string; reason: InvalidCookieEvent['reason'] };
const malformed: Rejection = { name: 'session:invalid-cookie', reason: 'malformed' };
const unknownSession: Rejection = { name: 'session:invalid-cookie', reason: 'unknown-session' };
const unknownKey: Rejection = { name: 'session:crypto-error', reason: 'unknown-key' };
const forged: Rejection = { name: 'session:crypto-error', reason: 'forged' };

/** What a changed byte of a genuine envelope must give. */
function rejectionForByte(index: number): Rejection {
  if (index === 0) return malformed; // not our version: not our format
  if (index < KEY_ID.end) return unknownKey; // the key id no longer names a key of the ring
  return forged; // IV, ciphertext or tag: authentication fails
}

const flipBit = (value: string, bit: number): string => {
  const bytes = Buffer.from(value, 'base64url');
  bytes[bit >> 3] ^= 1 << (bit & 7);
  return bytes.toString('base64url');
};

const withKeyId = (value: string, id: Uint8Array): string => {
  const bytes = Buffer.from(value, 'base64url');
  bytes.set(id, KEY_ID.start);
  return bytes.toString('base64url');
};

const keyIdOf = (value: string): Buffer => Buffer.from(value, 'base64url').subarray(KEY_ID.start, KEY_ID.end);

/** The same bytes, spelled differently: the unused low bits of the last character set. */
const nonCanonical = (value: string): string => value.slice(0, -1) + BASE64URL[BASE64URL.indexOf(value.at(-1)!) ^ 1];

/** The token a genuine cookie carries (what the row id is the SHA-256 of). */
function tokenOf(value: string, secret: string | string[] = SECRET, name = 'session'): Buffer {
  const decoded = new CookieCodec(secret, name).decode(value, TOKEN_BYTES);
  if (!decoded.ok) throw new Error(`not a genuine cookie: ${decoded.reason}`);
  return decoded.payload;
}

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();

/** A Set-Cookie header's attributes, lowercased, in a stable order. */
const attributesOf = (header: string): string[] =>
  header
    .split(';')
    .slice(1)
    .map((part) => part.trim().toLowerCase())
    .sort();

/*
 * RFC 6265 cookie-octets: everything a browser sends in an unquoted cookie
 * value.  Excluded, because no cookie can carry them: whitespace (trimmed by
 * HTTP), ';' (ends the cookie), ',' and '\' (not cookie-octets), '"' (only as
 * quotes around the whole value), control characters (fetch refuses them in
 * a header) and non-ASCII (not octets of a cookie).
 */
const COOKIE_OCTETS = Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i)).filter(
  (c) => !'",;\\'.includes(c),
);
const cookieValue = (options: { minLength?: number; maxLength?: number } = {}) =>
  fc.string({ unit: fc.constantFrom(...COOKIE_OCTETS), ...options });

/** What a route sees of the session, without creating a row for it; `clean` is a new, empty one. */
const fresh: Route = (ctx) => ({ isNew: ctx.session.isNew, size: ctx.session.size, keys: ctx.session.keys() });
const clean = { isNew: true, size: 0, keys: [] };
const extraRoutes: Record<string, Route> = {
  'GET /fresh': fresh,
  'GET /settings': (ctx) => ctx.session.settings,
  // For cookiePath: '/app'.
  'POST /app/set': routes['POST /set'],
  'GET /app/fresh': fresh,
  'POST /app/invalidate': routes['POST /invalidate'],
};

/** A genuine cookie from the app: its session holds { owner: 'me' }. */
async function issue(h: Harness): Promise<string> {
  const client = h.client();
  expect((await client.post('/set', { owner: 'me' })).status).toBe(200);
  return (await client.cookie())!;
}

function expectRemoval(reply: Reply, name = 'session'): void {
  expect(reply.cookies).toHaveLength(1);
  const [removal] = reply.cookies;
  expect(removal.key).toBe(name);
  expect(removal.value).toBe('');
  expect(removal.expiryTime()).toBeLessThan(Date.now());
}

/**
 * Sends `value` as the cookie of a fresh client: the request must succeed with
 * a clean session, remove the cookie, emit exactly `expected`, and (unless the
 * value decrypted) never reach the database.
 */
async function expectRejected(h: Harness, value: string, expected: Rejection, name = 'session'): Promise<void> {
  h.events.splice(0);
  let reply!: Reply;
  const sql = await h.count(
    async () => (reply = await h.client().get('/fresh', { headers: { cookie: `${name}=${value}` } })),
  );
  expect(reply.status).toBe(200);
  expect(reply.json).toEqual(clean);
  expectRemoval(reply, name);
  expect(h.events).toEqual([expected]);
  expect(sql.map(verb)).toEqual(expected === unknownSession ? ['select'] : []);
}

/** A harness with its own options, closed afterwards. Every harness refreshes the schema. */
async function withApp(
  db: TestDatabase,
  options: Partial<SessionOptions>,
  fn: (h: Harness) => Promise<void>,
): Promise<void> {
  const h = await harness(db, { options, routes: extraRoutes });
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

const rowCount = (h: Harness) => h.orm.em.fork().count(Session, {});

describe('CookieCodec', () => {
  const key = generateSecretKey();
  const codec = new CookieCodec(key, 'session');

  test('decodes what it encodes, for any payload', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const payload = Buffer.from(bytes);
        expect(codec.decode(codec.encode(payload), payload.length)).toEqual({ ok: true, payload, stale: false });
      }),
    );
  });

  test('the value is canonical URL-safe base64 of the envelope, with no payload byte in clear', () => {
    const payload = Buffer.from('PLAINTEXT-MARKER'); // 16 recognisable bytes
    const value = codec.encode(payload);
    expect(value).toMatch(/^[A-Za-z0-9_-]{66}$/);
    const raw = Buffer.from(value, 'base64url');
    expect(raw.toString('base64url')).toBe(value);
    expect(raw).toHaveLength(ENVELOPE_BYTES);
    expect(raw[0]).toBe(1);
    // No 4-byte run of the payload survives anywhere in the envelope.
    for (let i = 0; i + 4 <= payload.length; i++) expect(raw.includes(payload.subarray(i, i + 4))).toBe(false);
    expect(value).not.toContain('PLAINTEXT');
  });

  describe('values decrypted lately are kept, not decrypted again', () => {
    test('a value decodes to the same payload every time, once kept', () => {
      const fresh = new CookieCodec(key, 'session');
      const payload = randomBytes(TOKEN_BYTES);
      const value = fresh.encode(payload);
      for (let i = 0; i < 3; i++) expect(fresh.decode(value, TOKEN_BYTES)).toEqual({ ok: true, payload, stale: false });
      expect(fresh.recentCount).toBe(1);
      // Kept under its length: the same value with another expected payload length is still malformed.
      expect(fresh.decode(value, TOKEN_BYTES + 16)).toEqual({ ok: false, reason: 'malformed' });
    });

    test('only values that authenticated are kept: forged ones cannot fill it', () => {
      const fresh = new CookieCodec(key, 'session');
      const other = new CookieCodec(generateSecretKey(), 'session');
      const wrongName = new CookieCodec(key, 'other');
      for (let i = 0; i < 200; i++) {
        expect(fresh.decode(other.encode(randomBytes(TOKEN_BYTES)), TOKEN_BYTES)).toEqual({
          ok: false,
          reason: 'unknown-key',
        });
        expect(fresh.decode(wrongName.encode(randomBytes(TOKEN_BYTES)), TOKEN_BYTES)).toEqual({
          ok: false,
          reason: 'forged',
        });
      }
      expect(fresh.recentCount).toBe(0);
    });

    test('at most 4096 are kept; one pushed out still decodes, decrypted again', () => {
      const fresh = new CookieCodec(key, 'session');
      const payloads = Array.from({ length: 5000 }, () => randomBytes(TOKEN_BYTES));
      const values = payloads.map((payload) => fresh.encode(payload));
      for (const value of values) fresh.decode(value, TOKEN_BYTES);
      expect(fresh.recentCount).toBe(4096);
      expect(fresh.decode(values[0], TOKEN_BYTES)).toEqual({ ok: true, payload: payloads[0], stale: false });
      expect(fresh.recentCount).toBe(4096);
    });
  });

  test('two encodings of one payload differ: each has a fresh random IV', () => {
    const payload = randomBytes(TOKEN_BYTES);
    const [a, b] = [codec.encode(payload), codec.encode(payload)];
    expect(a).not.toBe(b);
    const iv = (value: string) => Buffer.from(value, 'base64url').subarray(5, 17);
    expect(iv(a).equals(iv(b))).toBe(false);
    expect(codec.decode(a, TOKEN_BYTES)).toMatchObject({ ok: true });
    expect(codec.decode(b, TOKEN_BYTES)).toMatchObject({ ok: true });
  });

  test('a value made for one cookie name does not decode under another: the name is authenticated', () => {
    const value = new CookieCodec(key, 'a').encode(randomBytes(TOKEN_BYTES));
    expect(new CookieCodec(key, 'a').decode(value, TOKEN_BYTES)).toMatchObject({ ok: true });
    expect(new CookieCodec(key, 'b').decode(value, TOKEN_BYTES)).toEqual({ ok: false, reason: 'forged' });
  });

  test('a value made under a key not in the ring is unknown-key', () => {
    const value = new CookieCodec(generateSecretKey(), 'session').encode(randomBytes(TOKEN_BYTES));
    expect(codec.decode(value, TOKEN_BYTES)).toEqual({ ok: false, reason: 'unknown-key' });
  });

  test('with a ring, the first key encodes, every key decodes, and an older key marks the value stale', () => {
    const older = generateSecretKey();
    const ring = new CookieCodec([key, older], 'session');
    const payload = randomBytes(TOKEN_BYTES);
    expect(ring.decode(new CookieCodec(older, 'session').encode(payload), TOKEN_BYTES)).toEqual({
      ok: true,
      payload,
      stale: true,
    });
    expect(codec.decode(ring.encode(payload), TOKEN_BYTES)).toEqual({ ok: true, payload, stale: false });
  });

  test('a value of the wrong payload length is malformed', () => {
    expect(codec.decode(codec.encode(randomBytes(TOKEN_BYTES)), TOKEN_BYTES + 1)).toEqual({
      ok: false,
      reason: 'malformed',
    });
  });

  test('flipping any bit of the envelope makes it fail', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: TOKEN_BYTES, maxLength: TOKEN_BYTES }),
        fc.nat({ max: ENVELOPE_BYTES * 8 - 1 }),
        (bytes, bit) => {
          const value = flipBit(codec.encode(Buffer.from(bytes)), bit);
          expect(codec.decode(value, TOKEN_BYTES)).toEqual({ ok: false, reason: rejectionForByte(bit >> 3).reason });
        },
      ),
    );
  });

  // A changed cookie value must never open the session, even when it spells the same bytes.
  test('only the canonical spelling decodes: a value with the unused bits of its last character set is refused', () => {
    const value = codec.encode(randomBytes(TOKEN_BYTES));
    const other = nonCanonical(value);
    expect(other).not.toBe(value);
    expect(Buffer.from(other, 'base64url').equals(Buffer.from(value, 'base64url'))).toBe(true);
    expect(codec.decode(other, TOKEN_BYTES)).toEqual({ ok: false, reason: 'malformed' });
  });

  test.each([16, 24, 32])('a %i-byte key works, and only for its own values', (size) => {
    const sized = new CookieCodec(randomBytes(size).toString('base64url'), 'session');
    const payload = randomBytes(TOKEN_BYTES);
    expect(sized.decode(sized.encode(payload), TOKEN_BYTES)).toEqual({ ok: true, payload, stale: false });
    expect(codec.decode(sized.encode(payload), TOKEN_BYTES)).toEqual({ ok: false, reason: 'unknown-key' });
  });

  test.each([
    ['an 8-byte key', randomBytes(8).toString('base64url'), /secret: a key must be 16, 24 or 32 bytes/],
    ['a 33-byte key', randomBytes(33).toString('base64url'), /secret: a key must be 16, 24 or 32 bytes/],
    ['an empty string', '', /secret: expected a base64url key/],
    ['standard base64 with + and /', Buffer.alloc(32, 0xfb).toString('base64'), /secret: expected a base64url key/],
    ['a padded key', randomBytes(32).toString('base64url') + '=', /secret: expected a base64url key/],
    ['a non-canonical key', nonCanonical(randomBytes(32).toString('base64url')), /secret: a key must be/],
    ['a non-canonical 16-byte key', nonCanonical(randomBytes(16).toString('base64url')), /secret: a key must be/],
    ['an empty list', [], /secret: give at least one key/],
    ['the same key twice', [key, key], /secret: the same key is listed twice/],
    ['a bad second key', [key, 'short'], /secret\[1\]: /],
  ])('%s is refused with a ConfigurationError', (_, secret, message) => {
    const make = () => new CookieCodec(secret as string | string[], 'session');
    expect(make).toThrow(ConfigurationError);
    expect(make).toThrow(message);
  });
});

describe('session() refuses bad cookie configuration, naming the option', () => {
  const sqlite = databases.find((db) => db.name === 'sqlite')!;
  let orm: MikroORM;
  beforeAll(async () => {
    orm = await sqlite.init([Session, Item]);
  });
  afterAll(() => orm?.close(true));

  const attempt = (options: Record<string, unknown>) => () =>
    session({ orm, entity: Session, secret: SECRET, ...options } as SessionOptions);

  test.each([
    ['a __Host- name without Secure', { cookieName: '__Host-sid' }, 'cookieName'],
    ['SameSite none without Secure', { cookieSameSite: 'none' }, 'cookieSameSite'],
    ['a cookieName with a space', { cookieName: 'my session' }, 'cookieName'],
    ['a cookiePath not starting with /', { cookiePath: 'app' }, 'cookiePath'],
    ['a negative cookieMaxAge', { cookieMaxAge: -1 }, 'cookieMaxAge'],
    ['an unknown option', { cookieMaxage: 60 }, 'cookieMaxage'],
    ['an empty secret list', { secret: [] }, 'secret'],
    ['a secret listed twice', { secret: [SECRET, SECRET] }, 'secret'],
    ['a non-canonical secret', { secret: nonCanonical(SECRET) }, 'secret'],
    // From configuration code that read a number (or null) where a key belongs.
    ['a secret that is neither a string nor a list', { secret: 42 }, 'secret'],
  ])('%s', (_, options, option) => {
    expect(attempt(options)).toThrow(ConfigurationError);
    expect(attempt(options)).toThrow(option);
  });

  // The cookie library (cookies 0.9) refuses these when the cookie is written, which is
  // after the commit: session() must refuse them at start-up instead.
  test.each([
    ['cookieDomain', 'my_site.test'],
    ['cookieDomain', 'example.test:8080'],
    ['cookiePath', '/café'],
    ['cookiePath', '/a<b'],
  ])('%s %j, which the cookie cannot carry, is refused at start-up', (option, value) => {
    expect(attempt({ [option]: value })).toThrow(ConfigurationError);
    expect(attempt({ [option]: value })).toThrow(option);
  });
});

for (const db of databases) {
  describe.skipIf(db.skip)(`bad cookies on ${db.name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await harness(db, { routes: extraRoutes });
    });
    afterAll(() => h?.close());

    test('any string that is not our envelope gives a clean session, a removal and session:invalid-cookie', async () => {
      // 66 base64url characters could be a well-formed envelope: those are the next tests' business.
      const values = cookieValue({ maxLength: 120 }).filter((value) => !/^[A-Za-z0-9_-]{66}$/.test(value));
      await fc.assert(
        fc.asyncProperty(values, (value) => expectRejected(h, value, malformed)),
        { numRuns: 40 },
      );
    });

    test('a well-formed envelope under a key id not in the ring is session:crypto-error unknown-key', async () => {
      const ours = keyIdOf(await issue(h));
      const envelopes = fc
        .uint8Array({ minLength: ENVELOPE_BYTES - 1, maxLength: ENVELOPE_BYTES - 1 })
        .filter((rest) => !ours.equals(rest.subarray(0, 4)))
        .map((rest) => Buffer.concat([Buffer.from([1]), rest]).toString('base64url'));
      await fc.assert(
        fc.asyncProperty(envelopes, (value) => expectRejected(h, value, unknownKey)),
        { numRuns: 40 },
      );
    });

    test('a random envelope under our key id is session:crypto-error forged', async () => {
      const header = Buffer.from(await issue(h), 'base64url').subarray(0, KEY_ID.end);
      const envelopes = fc
        .uint8Array({ minLength: ENVELOPE_BYTES - KEY_ID.end, maxLength: ENVELOPE_BYTES - KEY_ID.end })
        .map((rest) => Buffer.concat([header, rest]).toString('base64url'));
      await fc.assert(
        fc.asyncProperty(envelopes, (value) => expectRejected(h, value, forged)),
        { numRuns: 40 },
      );
    });

    test('a genuine cookie with one bit flipped is rejected as its layout says: version malformed, key id unknown-key, else forged', async () => {
      const genuine = await issue(h);
      await fc.assert(
        fc.asyncProperty(fc.nat({ max: ENVELOPE_BYTES * 8 - 1 }), (bit) =>
          expectRejected(h, flipBit(genuine, bit), rejectionForByte(bit >> 3)),
        ),
        { numRuns: 40 },
      );
      // The genuine cookie still works: rejecting a forgery does not touch its session.
      expect((await h.client().get('/get?key=owner', { headers: { cookie: `session=${genuine}` } })).json.value).toBe(
        'me',
      );
    });

    test('a truncated or extended genuine cookie is session:invalid-cookie malformed', async () => {
      const genuine = await issue(h);
      const raw = Buffer.from(genuine, 'base64url');
      const mutations = fc.oneof(
        fc.nat({ max: genuine.length - 1 }).map((length) => genuine.slice(0, length)),
        fc.nat({ max: raw.length - 1 }).map((length) => raw.subarray(0, length).toString('base64url')),
        fc.string({ unit: fc.constantFrom(...BASE64URL), minLength: 1, maxLength: 30 }).map((tail) => genuine + tail),
        fc.uint8Array({ minLength: 1, maxLength: 30 }).map((tail) => Buffer.concat([raw, tail]).toString('base64url')),
      );
      await fc.assert(
        fc.asyncProperty(mutations, (value) => expectRejected(h, value, malformed)),
        { numRuns: 40 },
      );
    });

    test('a genuine cookie with its key id swapped for another is session:crypto-error unknown-key', async () => {
      const genuine = await issue(h);
      const ids = fc.uint8Array({ minLength: 4, maxLength: 4 }).filter((id) => !keyIdOf(genuine).equals(id));
      await fc.assert(
        fc.asyncProperty(ids, (id) => expectRejected(h, withKeyId(genuine, id), unknownKey)),
        { numRuns: 40 },
      );
    });

    test('a non-canonical spelling of a genuine cookie does not open its session', async () => {
      await expectRejected(h, nonCanonical(await issue(h)), malformed);
    });

    test('a genuine cookie whose row was deleted is session:invalid-cookie unknown-session, and the client drops it', async () => {
      const client = h.client();
      await client.post('/set', { owner: 'me' });
      const { id } = (await client.get('/state')).json;
      expect(await h.orm.em.fork().nativeDelete(Session, { id })).toBe(1);
      h.events.splice(0);
      const reply = await client.get('/fresh');
      expect(reply.status).toBe(200);
      expect(reply.json).toEqual(clean);
      expectRemoval(reply);
      expect(h.events).toEqual([unknownSession]);
      // The removal emptied the jar: the next request has no cookie and raises nothing.
      expect(await client.cookie()).toBeUndefined();
      const next = await client.get('/fresh');
      expect(next.cookies).toEqual([]);
      expect(h.events).toEqual([unknownSession]);
    });

    test('a bad cookie does not stop the request from starting a session of its own', async () => {
      const client = h.client();
      await client.setCookie('not-a-session-cookie');
      h.events.splice(0);
      const reply = await client.post('/set', { fresh: true });
      expect(reply.status).toBe(200);
      expect(h.events).toEqual([malformed]);
      // One Set-Cookie replaces the bad value with a new session's cookie.
      expect(reply.cookies).toHaveLength(1);
      expect(tokenOf(reply.cookies[0].value)).toHaveLength(TOKEN_BYTES);
      expect((await client.get('/get?key=fresh')).json.value).toBe(true);
    });

    test('event payloads carry the ctx and a reason, never the cookie value or the token', async () => {
      const seen: InvalidCookieEvent[] = [];
      const listener = (event: InvalidCookieEvent) => seen.push(event);
      h.app.on('session:invalid-cookie', listener).on('session:crypto-error', listener);
      try {
        const genuine = await issue(h);
        const token = tokenOf(genuine);
        const gone = h.client();
        await gone.post('/set', { owner: 'me' });
        const goneCookie = (await gone.cookie())!;
        await h.orm.em.fork().nativeDelete(Session, { id: (await gone.get('/state')).json.id });
        const cases: [string, InvalidCookieEvent['reason'], Buffer | undefined][] = [
          ['not-ours-at-all', 'malformed', undefined],
          [flipBit(genuine, 300), 'forged', token],
          [
            withKeyId(
              genuine,
              keyIdOf(genuine).map((byte) => byte ^ 0xff),
            ),
            'unknown-key',
            token,
          ],
          [goneCookie, 'unknown-session', tokenOf(goneCookie)],
        ];
        for (const [value, reason, secret] of cases) {
          seen.splice(0);
          await h.client().get('/fresh', { headers: { cookie: `session=${value}` } });
          expect(seen).toHaveLength(1);
          const [event] = seen;
          expect(Object.keys(event).sort()).toEqual(['ctx', 'reason']);
          expect(event.reason).toBe(reason);
          expect(event.ctx.app).toBe(h.app);
          expect(event.ctx.path).toBe('/fresh');
          expect(event.ctx.get('cookie')).toBe(`session=${value}`);
          const { ctx: _ctx, ...rest } = event;
          const json = JSON.stringify(rest);
          expect(json).not.toContain(value);
          if (secret)
            for (const spelling of [secret.toString('hex'), secret.toString('base64url'), secret.toString('base64')])
              expect(json).not.toContain(spelling);
        }
      } finally {
        h.app.off('session:invalid-cookie', listener).off('session:crypto-error', listener);
      }
    });

    test('a value made for another cookie name under the same secret is session:crypto-error forged', async () => {
      const other = new CookieCodec(SECRET, 'sid').encode(randomBytes(TOKEN_BYTES));
      await expectRejected(h, other, forged);
    });
  });

  describe.skipIf(db.skip)(`key rotation on ${db.name}`, () => {
    const oldKey = generateSecretKey();
    const newKey = generateSecretKey();
    let rotated: Harness;
    let newOnly: Harness;
    beforeAll(async () => {
      // Both before any data: each harness refreshes the (shared) schema.
      newOnly = await harness(db, { options: { secret: newKey }, routes: extraRoutes });
      rotated = await harness(db, { options: { secret: [newKey, oldKey] }, routes: extraRoutes });
    });
    afterAll(async () => {
      await rotated?.close();
      await newOnly?.close();
    });

    /**
     * The cookie an app running with only oldKey issued for a session: the same
     * token under oldKey.  (A second app over the same rows is not possible with
     * the harness, which refreshes the schema; the codec is what session() uses.)
     */
    async function oldKeyCookie(data: Record<string, unknown>): Promise<{ token: Buffer; cookie: string }> {
      const owner = rotated.client();
      await owner.post('/set', data);
      const token = tokenOf((await owner.cookie())!, newKey);
      return { token, cookie: new CookieCodec(oldKey, 'session').encode(token) };
    }

    test('an old-key cookie still opens its session and is re-issued under the first key, with no write', async () => {
      const { token, cookie } = await oldKeyCookie({ color: 'green' });
      const client = rotated.client();
      await client.setCookie(cookie);
      rotated.events.splice(0);
      let reply!: Reply;
      const sql = await rotated.count(async () => (reply = await client.get('/get?key=color')));
      expect(reply.status).toBe(200);
      expect(reply.json.value).toBe('green');
      expect(sql.map(verb)).toEqual(['select']);
      expect(rotated.events).toEqual([]);

      expect(reply.cookies).toHaveLength(1);
      const reissued = reply.cookies[0];
      expect(reissued).toMatchObject({ key: 'session', path: '/', httpOnly: true, sameSite: 'lax' });
      expect(reissued.value).not.toBe(cookie);
      // Same session (same token), now under newKey alone.
      expect(new CookieCodec(newKey, 'session').decode(reissued.value, TOKEN_BYTES)).toEqual({
        ok: true,
        payload: token,
        stale: false,
      });
      expect(new CookieCodec(oldKey, 'session').decode(reissued.value, TOKEN_BYTES)).toEqual({
        ok: false,
        reason: 'unknown-key',
      });

      // The client now carries the new cookie: no further re-issue.
      expect(await client.cookie()).toBe(reissued.value);
      const next = await client.get('/get?key=color');
      expect(next.json.value).toBe('green');
      expect(next.cookies).toEqual([]);
    });

    test('an old-key cookie whose session also changes is re-issued once, with the change', async () => {
      const { token, cookie } = await oldKeyCookie({ n: 1 });
      const client = rotated.client();
      await client.setCookie(cookie);
      const reply = await client.post('/set', { n: 2 });
      expect(reply.cookies).toHaveLength(1);
      expect(tokenOf(reply.cookies[0].value, newKey).equals(token)).toBe(true);
      expect((await client.get('/get?key=n')).json.value).toBe(2);
    });

    test('a ring key id on a value made under another ring key is session:crypto-error forged', async () => {
      const { cookie } = await oldKeyCookie({ x: 1 });
      const newKeyId = keyIdOf(new CookieCodec(newKey, 'session').encode(randomBytes(TOKEN_BYTES)));
      await expectRejected(rotated, withKeyId(cookie, newKeyId), forged);
    });

    test('an app with only the new key rejects an old-key cookie as session:crypto-error unknown-key', async () => {
      const { cookie } = await oldKeyCookie({ color: 'green' });
      await expectRejected(newOnly, cookie, unknownKey);
    });
  });

  describe.skipIf(db.skip)(`cookie attributes and settings on ${db.name}`, () => {
    /** The Set-Cookie header of a new session. */
    async function firstCookie(h: Harness, init: RequestInit = {}): Promise<{ header: string; cookie: Cookie }> {
      const reply = await h.client().post('/set', { a: 1 }, init);
      expect(reply.status).toBe(200);
      const headers = reply.headers.getSetCookie();
      expect(headers).toHaveLength(1);
      return { header: headers[0], cookie: reply.cookies[0] };
    }

    test('defaults: Path=/, HttpOnly, SameSite=Lax; no Secure, Max-Age, Expires or Domain', () =>
      withApp(db, {}, async (h) => {
        const { header, cookie } = await firstCookie(h);
        expect(cookie).toMatchObject({
          key: 'session',
          path: '/',
          httpOnly: true,
          sameSite: 'lax',
          secure: false,
          domain: null,
          maxAge: null,
          expires: 'Infinity',
        });
        expect(attributesOf(header)).toEqual(['httponly', 'path=/', 'samesite=lax']);
      }));

    test('cookieMaxAge: 3600 sends Max-Age=3600', () =>
      withApp(db, { cookieMaxAge: 3600 }, async (h) => {
        const { header, cookie } = await firstCookie(h);
        expect(cookie.maxAge).toBe(3600);
        expect(attributesOf(header)).toContain('max-age=3600');
      }));

    test('cookiePath and cookieDomain are sent, and every removal carries the same Path and Domain', () =>
      withApp(db, { cookiePath: '/app', cookieDomain: 'example.test' }, async (h) => {
        // Outside the jar, which refuses a Domain other than the 127.0.0.1 it talks to.
        const send = async (path: string, init: RequestInit) =>
          (await fetch(h.url + path, init)).headers.getSetCookie();
        const [set] = await send('/app/set', { method: 'POST', body: '{"a":1}' });
        expect(attributesOf(set)).toEqual(['domain=example.test', 'httponly', 'path=/app', 'samesite=lax']);
        const value = Cookie.parse(set)!.value;

        const removals = [
          ...(await send('/app/fresh', { headers: { cookie: 'session=garbage' } })),
          ...(await send('/app/invalidate', { method: 'POST', headers: { cookie: `session=${value}` } })),
        ];
        expect(removals).toHaveLength(2);
        for (const removal of removals) {
          expect(Cookie.parse(removal)!.value).toBe('');
          expect(attributesOf(removal)).toEqual([
            'domain=example.test',
            'expires=thu, 01 jan 1970 00:00:00 gmt',
            'httponly',
            'max-age=0',
            'path=/app',
            'samesite=lax',
          ]);
        }
      }));

    test.each([
      [{ cookieSameSite: 'strict' as const }, ['httponly', 'path=/', 'samesite=strict']],
      [{ cookieSameSite: false as const }, ['httponly', 'path=/']],
      [{ cookieHttpOnly: false }, ['path=/', 'samesite=lax']],
    ])('%j sets exactly the attributes %j', (options, attributes) =>
      withApp(db, options, async (h) => {
        expect(attributesOf((await firstCookie(h)).header)).toEqual(attributes);
      }),
    );

    test('cookieName: "sid" names the cookie; a cookie under another name is not ours', () =>
      withApp(db, { cookieName: 'sid' }, async (h) => {
        const client = h.client();
        const reply = await client.post('/set', { a: 1 });
        expect(reply.cookies.map((cookie) => cookie.key)).toEqual(['sid']);
        expect((await client.get('/get?key=a')).json.value).toBe(1);
        // Our value under the default name: ignored, no event, no removal.
        h.events.splice(0);
        const other = await h.client().get('/fresh', { headers: { cookie: `session=${await client.cookie('sid')}` } });
        expect(other.json).toEqual(clean);
        expect(other.cookies).toEqual([]);
        expect(h.events).toEqual([]);
        // A value made for "session" under the same secret is refused under "sid".
        await expectRejected(h, new CookieCodec(SECRET, 'session').encode(randomBytes(TOKEN_BYTES)), forged, 'sid');
      }));

    test('cookieSecure: true on plain HTTP refuses with an error and writes nothing', () =>
      withApp(db, { cookieSecure: true }, async (h) => {
        const errors: unknown[] = [];
        h.app.on('error', (error) => errors.push(error));
        let reply!: Reply;
        const sql = await h.count(async () => (reply = await h.client().post('/set', { a: 1 })));
        expect(reply.status).toBe(500);
        expect(reply.cookies).toEqual([]);
        expect(sql).toEqual([]);
        expect(await rowCount(h)).toBe(0);
        expect(errors).toHaveLength(1);
        expect(errors[0]).toBeInstanceOf(SessionError);
        expect((errors[0] as Error).message).toMatch(/cookieSecure is true but this request is not HTTPS/);
      }));

    test('cookieSecure: true still removes a bad cookie that came over plain HTTP, without Secure', () =>
      withApp(db, { cookieSecure: true }, async (h) => {
        const reply = await h.client().get('/fresh', { headers: { cookie: 'session=garbage' } });
        expect(reply.status).toBe(200);
        expectRemoval(reply);
        expect(reply.cookies[0].secure).toBe(false);
      }));

    test('cookieSecure: "auto" sends Secure behind a TLS proxy (X-Forwarded-Proto: https), not over plain HTTP', () =>
      withApp(db, { cookieSecure: 'auto' }, async (h) => {
        h.app.proxy = true;
        const tls = await firstCookie(h, { headers: { 'x-forwarded-proto': 'https' } });
        expect(tls.cookie.secure).toBe(true);
        expect(attributesOf(tls.header)).toContain('secure');
        const plain = await firstCookie(h);
        expect(plain.cookie.secure).toBe(false);
        expect(attributesOf(plain.header)).not.toContain('secure');
      }));

    test('cookieSameSite "none" with cookieSecure "auto": refused on plain HTTP (a browser would drop it), Secure behind TLS', () =>
      withApp(db, { cookieSecure: 'auto', cookieSameSite: 'none' }, async (h) => {
        const errors: unknown[] = [];
        h.app.on('error', (error) => errors.push(error));
        let reply!: Reply;
        const sql = await h.count(async () => (reply = await h.client().post('/set', { a: 1 })));
        expect(reply.status).toBe(500);
        expect(reply.cookies).toEqual([]);
        expect(sql).toEqual([]);
        expect(await rowCount(h)).toBe(0);
        expect(errors).toHaveLength(1);
        expect(errors[0]).toBeInstanceOf(SessionError);
        expect((errors[0] as Error).message).toMatch(/cookieSameSite is "none".*not HTTPS/);
        h.app.proxy = true;
        const tls = await firstCookie(h, { headers: { 'x-forwarded-proto': 'https' } });
        expect(attributesOf(tls.header)).toEqual(expect.arrayContaining(['secure', 'samesite=none']));
      }));

    test('cookieSameSite "none" on plain HTTP still removes a bad cookie, without the SameSite a browser would refuse', () =>
      withApp(db, { cookieSecure: 'auto', cookieSameSite: 'none' }, async (h) => {
        const reply = await h.client().get('/fresh', { headers: { cookie: 'session=garbage' } });
        expect(reply.status).toBe(200);
        expectRemoval(reply);
        expect(attributesOf(reply.headers.get('set-cookie')!)).not.toContain('samesite=none');
      }));

    test('ctx.session.settings reads every setting by its option name: defaults', () =>
      withApp(db, {}, async (h) => {
        expect((await h.client().get('/settings')).json).toEqual({
          cookieName: 'session',
          cookieMaxAge: null,
          cookiePath: '/',
          cookieDomain: null,
          cookieSecure: false,
          cookieHttpOnly: true,
          cookieSameSite: 'lax',
          idleTimeout: null,
          absoluteTimeout: null,
          renewalTimeout: null,
          renewalTryEvery: 5,
          extensionDelay: null,
          extensionChance: 100,
          extensionDeadline: 1,
        });
      }));

    test('ctx.session.settings reads every setting by its option name: as given', async () => {
      const given = {
        cookieName: 'sid',
        cookieMaxAge: 3600,
        cookiePath: '/app',
        cookieDomain: 'example.test',
        cookieSecure: 'auto',
        cookieHttpOnly: false,
        cookieSameSite: 'strict',
      } as const;
      await withApp(db, given, async (h) => {
        expect((await h.client().get('/settings')).json).toMatchObject(given);
      });
    });
  });
}
