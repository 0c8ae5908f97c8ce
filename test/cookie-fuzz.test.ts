/*
 * What this file proves, with 10,000 generated Cookie headers per database (SQLite,
 * PostgreSQL, MariaDB), each sent over real HTTP to a real Koa app with session() in
 * front of a read-only route:
 *
 *   1. no cookie ever causes a 5xx;
 *   2. a request opens a session only when the session cookie value it carries, as Koa's
 *      parser reads it (sessionValueOf), is byte-identical to a valid cookie of that
 *      session: its current cookie, the same payload under the ring's older key (then
 *      re-issued under the first key), or one the test made with the app's key.  It then
 *      sees that session's data and no other's: every real session holds a unique marker,
 *      and the route reports the marker and id it sees;
 *   3. anything else gives a clean new session, exactly one event, and exactly one removal
 *      Set-Cookie, never a new cookie and never a new row (a header without our cookie:
 *      no event and no Set-Cookie at all);
 *   4. nothing is written: the ORM sends only SELECTs, the table keeps its rows, and every
 *      real session still reads its own marker afterwards.
 *
 * The generated cookies: mutations of valid cookies (bit flips, character changes,
 * truncations, extensions, base64url alphabet and case changes, quoting), random bytes
 * and strings, the sessions' tokens under other keys and other cookie names, valid
 * envelopes of tokens that name no row, valid cookies under other cookie names, splices
 * of two sessions' cookies, duplicated `session=` pairs, and 8 KB values.  Six live
 * sessions and two revoked ones (authentic cookies, no row) feed the mutations.
 *
 * A second app, on SQLite only and with 5,000 cookies, uses an entity with
 * ConfigurableCookie: a session with its own Path and Domain carries them in the
 * payload after the token, so the codec accepts a range of lengths; half its sessions do.
 *
 * Requests go in batches of BATCH, CONCURRENCY at a time.  fast-check prints the seed
 * on failure; FUZZ_SEED=<seed> replays the same cases (over new sessions: tokens are
 * random), and FUZZ_RUNS=<n> changes the number of batches.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { EntityName } from '@mikro-orm/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CookieCodec } from '../src/codec.js';
import { MAX_ATTRIBUTE_BYTES } from '../src/features/cookie.js';
import { ConfigurableCookie, defineSessionEntity, generateSecretKey } from '../src/index.js';
import { TOKEN_BYTES } from '../src/token.js';
import { databases } from './support/databases.js';
import { harness, SECRET, Session, type Harness, type Route } from './support/app.js';

/** The app decrypts with both keys and encrypts with the first (key rotation). */
const OLD_KEY = generateSecretKey();
const NAME = 'session';
const BATCH = 50;
const CONCURRENCY = 8;
/** Batches per database for the default entity: 200 × 50 = 10,000 cookies (5,000 for the ConfigurableCookie app). */
const RUNS = Number(process.env.FUZZ_RUNS ?? 200);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const LIVE_SESSIONS = 6;
const REVOKED_SESSIONS = 2;

const CookieSession = defineSessionEntity({
  name: 'FuzzCookieSession',
  tableName: 'fuzz_cookie_session',
  features: [ConfigurableCookie],
});

/** The apps under test, the databases each runs on, and its number of batches. */
const APPS: {
  name: string;
  entity: EntityName<any>;
  carriesAttributes: boolean;
  on: (name: string) => boolean;
  runs: number;
}[] = [
  { name: 'the default entity', entity: Session, carriesAttributes: false, on: () => true, runs: RUNS },
  // A second pass over the same database, at half the count to keep the file's run time down.
  {
    name: 'ConfigurableCookie, half the sessions with their own Path and Domain',
    entity: CookieSession,
    carriesAttributes: true,
    on: (name) => name === 'sqlite',
    runs: Math.ceil(RUNS / 2),
  },
];

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** What a header value can carry and fetch sends as it is: printable ASCII and Latin-1's upper half (obs-text). */
const HEADER_CHARS = [
  ...Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)),
  ...Array.from({ length: 0x80 }, (_, i) => String.fromCharCode(0x80 + i)),
];
/** Cookie names that are not ours, some of them close to it. */
const OTHER_NAMES = [
  'sid',
  'Session',
  'SESSION',
  'session_',
  'xsession',
  'session.sig',
  '__Host-session',
  'sessio',
  'session-',
];

const routes: Record<string, Route> = {
  /** What the route reports: the session it sees, without ever creating one. */
  'GET /whoami': (ctx) => {
    const isNew = ctx.session.isNew;
    return {
      isNew,
      id: isNew ? null : ctx.session.id,
      marker: ctx.session.get('marker') ?? null,
      size: ctx.session.size,
    };
  },
  /** Opens a session holding `marker`; with `own`, the session gets its own cookie Path and Domain. */
  'POST /open': (ctx, body) => {
    ctx.session.set('marker', body.marker);
    if (body.own) {
      ctx.session.settings.withEdit((settings) => {
        settings.cookiePath = '/fuzz';
        settings.cookieDomain = 'fuzz.example';
      });
    }
    return { ok: true };
  },
};

interface Owner {
  marker: string;
  id: string;
  token: Buffer;
  /** The payload after the token (a session's own Path and Domain), kept when re-issued. */
  rest: Buffer;
  /** Made under the older ring key: the response re-issues it under the first. */
  stale: boolean;
}

/** A valid-looking cookie value of the pool: a live session's (current or old key), or a revoked one's (no row). */
interface Genuine {
  value: string;
  token: Buffer;
  /** The live session it opens, if any. */
  owner?: Owner;
}

interface World {
  genuine: Genuine[];
  /** Every value of the pool that must open a session, and the session it must open. */
  valid: Map<string, Owner>;
  /** The app accepts a payload longer than the token: ConfigurableCookie's carried Path and Domain. */
  carriesAttributes: boolean;
}

/**
 * One generated session cookie value, how it was made, and the session it must open when the generator made a valid
 * one.
 */
type Value = [kind: string, value: string, opens?: Owner];

/**
 * A generated request: its Cookie header, how it was made (for the failure message), and the valid values it was made
 * with.
 */
interface Case {
  kind: string;
  header: string;
  made: Map<string, Owner>;
}

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');
const at = <T>(list: readonly T[], index: number): T => list[index % list.length];
const b64Chars = (options: { minLength?: number; maxLength?: number }) =>
  fc.string({ unit: fc.constantFrom(...B64URL), ...options });
const headerText = (options: { minLength?: number; maxLength?: number }) =>
  fc.string({ unit: fc.constantFrom(...HEADER_CHARS), ...options });

/*
 * The session cookie value Koa hands the middleware (ctx.cookies.get, from the `cookies`
 * package): the first `name=` pair of the header, and a value starting with '"' loses its
 * first and last characters (RFC 6265 allows a quoted cookie-value; the package does not
 * check that the last character is the closing quote).  undefined: no such pair.
 */
function sessionValueOf(header: string): string | undefined {
  const trimmed = header.replace(/^[ \t]+|[ \t]+$/g, ''); // fetch and Node's parser trim the header
  for (const part of trimmed.split(';')) {
    const pair = part.replace(/^ +/, '');
    if (!pair.startsWith(`${NAME}=`)) continue;
    const value = pair.slice(NAME.length + 1);
    return value.startsWith('"') ? value.slice(1, -1) : value;
  }
  return undefined;
}

/* ---------------------------------------------------------------- mutations of one value */

function flipBits(value: string, bits: number[]): string {
  const bytes = Buffer.from(value, 'base64url');
  for (const bit of bits) bytes[(bit >> 3) % bytes.length] ^= 1 << (bit & 7);
  return bytes.toString('base64url');
}

function replaceChar(value: string, index: number, char: string): string {
  const i = index % value.length;
  return value.slice(0, i) + char + value.slice(i + 1);
}

function toggleCase(value: string, positions: number[]): string {
  const chars = [...value];
  for (const position of positions) {
    const i = position % chars.length;
    const c = chars[i];
    chars[i] = c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase();
  }
  return chars.join('');
}

/** The same bytes in another spelling of base64: what a lenient decoder would take for the same cookie. */
const ALPHABET_CHANGES: ((value: string) => string)[] = [
  (v) => Buffer.from(v, 'base64url').toString('base64'), // standard alphabet, padded
  (v) => Buffer.from(v, 'base64url').toString('base64').replace(/=+$/, ''), // standard alphabet
  (v) => v.replaceAll('-', '+').replaceAll('_', '/'),
  (v) => `${v}=`,
  (v) => `${v}==`,
  (v) => v.slice(0, -1) + B64URL[B64URL.indexOf(v.at(-1)!) ^ 1], // the unused low bits of the last character
  (v) => v.replaceAll('-', '%2D').replaceAll('_', '%5F'), // percent-encoded
  (v) => encodeURIComponent(Buffer.from(v, 'base64url').toString('base64')),
];

/** Quotes and blanks around the value. */
const WRAPPINGS: ((value: string) => string)[] = [
  (v) => `"${v}"`, // RFC 6265's quoted cookie-value: the same value
  (v) => `"${v}!`, // opens the session too: Koa's parser drops the last character, whatever it is (see sessionValueOf)
  (v) => `"${v}`,
  (v) => `${v}"`,
  (v) => `""${v}""`,
  (v) => `" ${v}"`,
  (v) => ` ${v}`,
  (v) => `${v} `,
  (v) => `${v}\t`,
  (v) => `'${v}'`,
];

/** Mutations of a genuine value, each a small named arbitrary of the new value. */
function mutationsOf(genuine: fc.Arbitrary<Genuine>): fc.Arbitrary<Value>[] {
  const mutation = <T>(kind: string, params: fc.Arbitrary<T>, mutate: (value: string, params: T) => string) =>
    fc.tuple(genuine, params).map(([g, p]): Value => [kind, mutate(g.value, p)]);
  return [
    mutation('bit flips', fc.array(fc.nat({ max: 8 * 1200 }), { minLength: 1, maxLength: 3 }), flipBits),
    mutation('one character changed', fc.tuple(fc.nat(), fc.constantFrom(...B64URL)), (v, [i, c]) =>
      replaceChar(v, i, c),
    ),
    mutation('characters swapped', fc.tuple(fc.nat(), fc.nat()), (v, [i, j]) => {
      const chars = [...v];
      [chars[i % v.length], chars[j % v.length]] = [chars[j % v.length], chars[i % v.length]];
      return chars.join('');
    }),
    mutation('truncated', fc.nat(), (v, n) => v.slice(0, n % v.length)),
    mutation('truncated bytes', fc.nat(), (v, n) => {
      const bytes = Buffer.from(v, 'base64url');
      return bytes.subarray(0, n % bytes.length).toString('base64url');
    }),
    mutation('a character removed', fc.nat(), (v, i) => v.slice(0, i % v.length) + v.slice((i % v.length) + 1)),
    mutation('extended', b64Chars({ minLength: 1, maxLength: 40 }), (v, tail) => v + tail),
    mutation('extended bytes', fc.uint8Array({ minLength: 1, maxLength: 30 }), (v, tail) =>
      Buffer.concat([Buffer.from(v, 'base64url'), tail]).toString('base64url'),
    ),
    mutation('extended with text', headerText({ minLength: 1, maxLength: 20 }), (v, tail) => v + tail),
    mutation('prefixed', b64Chars({ minLength: 1, maxLength: 10 }), (v, head) => head + v),
    mutation(
      'a character inserted',
      fc.tuple(fc.nat(), fc.constantFrom(...B64URL)),
      (v, [i, c]) => v.slice(0, i % v.length) + c + v.slice(i % v.length),
    ),
    mutation('base64 alphabet changed', fc.nat(), (v, i) => at(ALPHABET_CHANGES, i)(v)),
    mutation('case changed', fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), toggleCase),
    mutation('all upper case', fc.constant(null), (v) => v.toUpperCase()),
    mutation('all lower case', fc.constant(null), (v) => v.toLowerCase()),
    mutation('quoted or blanked', fc.nat(), (v, i) => at(WRAPPINGS, i)(v)),
  ];
}

/* ---------------------------------------------------------------- the generator */

/** Another cookie, before or after ours. */
const neighbour = fc.constantFrom('theme=dark', '_ga=GA1.2.3.4', 'a=', 'csrf="x;y"', 'lang=en-GB');

/** The valid values a case was made with. */
function madeOf(...values: Value[]): Map<string, Owner> {
  return new Map(values.filter(([, , opens]) => opens).map(([, value, opens]) => [value, opens!]));
}

/** `session=<value>`, alone or between other cookies. */
function asHeader(value: Value, before: string | null, after: string | null, separator: string): Case {
  return {
    kind: value[0],
    header: [before, `${NAME}=${value[1]}`, after].filter((part) => part !== null).join(separator),
    made: madeOf(value),
  };
}

function cases(world: World): fc.Arbitrary<Case> {
  const genuine = fc.constantFrom(...world.genuine);
  const separator = fc.constantFrom('; ', ';', ';  ');

  /** One value for the session cookie, with how it was made. */
  const value: fc.Arbitrary<Value> = fc.oneof(
    { weight: 3, arbitrary: genuine.map((g): Value => ['genuine', g.value, g.owner]) },
    { weight: 40, arbitrary: fc.oneof(...mutationsOf(genuine)) },
    // Random bytes and strings.
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 120 }).map((bytes): Value => ['random bytes', b64url(bytes)]) },
    { weight: 3, arbitrary: headerText({ maxLength: 200 }).map((text): Value => ['random text', text]) },
    {
      weight: 3,
      arbitrary: b64Chars({ minLength: 66, maxLength: 66 }).map((text): Value => ['random 66 characters', text]),
    },
    {
      weight: 3,
      // A well-formed envelope under one of the ring's key ids, with random IV, ciphertext and tag.
      arbitrary: fc
        .tuple(genuine, fc.uint8Array({ minLength: 44, maxLength: 44 }))
        .map(([g, rest]): Value => [
          'random envelope under a ring key id',
          Buffer.concat([Buffer.from(g.value, 'base64url').subarray(0, 5), rest]).toString('base64url'),
        ]),
    },
    // The sessions' tokens under other keys, other cookie names (the name is authenticated), other payload lengths.
    {
      weight: 5,
      arbitrary: fc
        .tuple(
          genuine,
          fc.constantFrom(16, 24, 32).chain((size) => fc.uint8Array({ minLength: size, maxLength: size })),
        )
        .map(([g, key]): Value => ['token under another key', new CookieCodec(b64url(key), NAME).encode(g.token)]),
    },
    {
      weight: 3,
      arbitrary: fc
        .tuple(genuine, fc.constantFrom(SECRET, OLD_KEY), fc.constantFrom(...OTHER_NAMES))
        .map(([g, key, name]): Value => [
          'token under our key for another cookie name',
          new CookieCodec(key, name).encode(g.token),
        ]),
    },
    {
      weight: 3,
      // Forged with our own key (as if it leaked): a valid envelope, but of a token that names no row.
      arbitrary: fc
        .tuple(fc.uint8Array({ minLength: TOKEN_BYTES, maxLength: TOKEN_BYTES }), fc.constantFrom(SECRET, OLD_KEY))
        .map(([token, key]): Value => [
          'unknown token under our key',
          new CookieCodec(key, NAME).encode(Buffer.from(token)),
        ]),
    },
    {
      weight: 2,
      // Shorter than a token: malformed.  Longer: malformed, unless the app takes carried attributes (up to
      // MAX_ATTRIBUTE_BYTES after the token), when it authenticates and opens the token's session, as the
      // generator knows: only a holder of the key can make it.  Unparsable attributes are ignored.
      arbitrary: fc
        .tuple(
          genuine,
          fc.oneof(
            fc.uint8Array({ maxLength: 40 }),
            fc.uint8Array({ minLength: MAX_ATTRIBUTE_BYTES - 2, maxLength: MAX_ATTRIBUTE_BYTES + 2 }),
          ),
          fc.constantFrom(SECRET, OLD_KEY),
        )
        .map(([g, extra, key]): Value => {
          const payload = extra.length === 0 ? g.token.subarray(0, 8) : Buffer.concat([g.token, extra]);
          const valid = world.carriesAttributes && extra.length > 0 && extra.length <= MAX_ATTRIBUTE_BYTES;
          const owner = valid && g.owner ? { ...g.owner, stale: key !== SECRET } : undefined;
          return ['payload of another length under our key', new CookieCodec(key, NAME).encode(payload), owner];
        }),
    },
    // Splices: the prefix of one session's cookie and the suffix of another's.
    {
      weight: 6,
      arbitrary: fc.tuple(genuine, genuine, fc.nat()).map(([a, b, n]): Value => {
        const cut = n % (a.value.length + 1);
        return ['splice of two cookies', a.value.slice(0, cut) + b.value.slice(cut)];
      }),
    },
    {
      weight: 3,
      arbitrary: fc.tuple(genuine, genuine, fc.nat()).map(([a, b, n]): Value => {
        const [x, y] = [Buffer.from(a.value, 'base64url'), Buffer.from(b.value, 'base64url')];
        const cut = n % (x.length + 1);
        return [
          'byte splice of two cookies',
          Buffer.concat([x.subarray(0, cut), y.subarray(cut)]).toString('base64url'),
        ];
      }),
    },
  );

  /** 8 KB values: one to a header, as Node refuses headers over 16 KB (431) before the app sees them. */
  const oversized: fc.Arbitrary<Value> = fc.oneof(
    genuine.map((g): Value => ['8 KB: genuine and padding', g.value.padEnd(8192, 'A')]),
    fc.nat().map((n): Value => ['8 KB of one character', B64URL[n % B64URL.length].repeat(8192)]),
    fc.uint8Array({ minLength: 6144, maxLength: 6144 }).map((bytes): Value => ['8 KB of random bytes', b64url(bytes)]),
  );

  /** One session cookie, possibly between other cookies. */
  const single = fc
    .tuple(
      fc.oneof({ weight: 97, arbitrary: value }, { weight: 3, arbitrary: oversized }),
      fc.option(neighbour),
      fc.option(neighbour),
      separator,
    )
    .map(([v, before, after, sep]) => asHeader(v, before, after, sep));

  /** Two session cookies in one header: the first counts. */
  const duplicate = fc
    .tuple(value, value, fc.constantFrom('; ', ';', '; other=1; '))
    .map(([first, second, sep]): Case => ({
      kind: `duplicate: ${first[0]}, then ${second[0]}`,
      header: `${NAME}=${first[1]}${sep}${NAME}=${second[1]}`,
      made: madeOf(first, second),
    }));

  /** A valid cookie under a name that is not ours: ignored, no event, no removal. */
  const otherName = fc
    .tuple(genuine, fc.constantFrom(...OTHER_NAMES), fc.option(neighbour))
    .map(([g, name, before]): Case => ({
      kind: `genuine value as cookie ${name}`,
      header: [before, `${name}=${g.value}`].filter(Boolean).join('; '),
      made: new Map(),
    }));

  /** 8 KB headers of many cookies. */
  const oversizedHeader = fc.tuple(genuine, fc.boolean()).map(([g, junkFirst]): Case => {
    const padding = `pad=${'x'.repeat(8192)}`;
    return junkFirst
      ? {
          kind: '8 KB of junk session pairs, then the genuine one',
          header: `${`${NAME}=junk; `.repeat(600)}${NAME}=${g.value}`,
          made: new Map(),
        }
      : { kind: 'genuine, then an 8 KB cookie', header: `${NAME}=${g.value}; ${padding}`, made: new Map() };
  });

  return fc.oneof(
    { weight: 80, arbitrary: single },
    { weight: 12, arbitrary: duplicate },
    { weight: 6, arbitrary: otherName },
    { weight: 2, arbitrary: oversizedHeader },
  );
}

/* ---------------------------------------------------------------- one request, checked */

const short = (text: string) => (text.length > 160 ? `${text.slice(0, 160)}… (${text.length} characters)` : text);

/** What one case must give, checked on the reply; returns whether it was a rejection (one event expected). */
async function check(h: Harness, world: World, { kind, header, made }: Case): Promise<boolean> {
  const sent = sessionValueOf(header);
  const owner = sent === undefined ? undefined : (world.valid.get(sent) ?? made.get(sent));
  const response = await fetch(`${h.url}/whoami`, { headers: { cookie: header } });
  const text = await response.text();
  const setCookies = response.headers.getSetCookie();
  const where = `${kind}: Cookie: ${short(header)}\n  status ${response.status}, body ${short(text)}, Set-Cookie ${JSON.stringify(setCookies.map(short))}`;
  const fail = (what: string) => {
    throw new Error(`${what}\n  ${where}`);
  };
  if (response.status !== 200) fail('not a 200');
  const seen = JSON.parse(text) as { isNew: boolean; id: string | null; marker: string | null; size: number };
  if (!/(^|,)\s*cookie\s*(,|$)/i.test(response.headers.get('vary') ?? '')) fail('no Vary: Cookie');
  if (setCookies.length && response.headers.get('cache-control') !== 'no-store')
    fail('a Set-Cookie without Cache-Control: no-store');

  if (owner) {
    if (seen.marker !== owner.marker || seen.id !== owner.id || seen.isNew)
      fail(`should have opened the session with marker ${owner.marker}`);
    if (!owner.stale) {
      if (setCookies.length) fail('a valid current cookie got a Set-Cookie');
    } else {
      // Re-issued under the first key: the same token and the session's own attributes, a new value.
      if (setCookies.length !== 1) fail('an old-key cookie should be re-issued once');
      const value = /^session=([^;]*)/.exec(setCookies[0])?.[1] ?? '';
      const decoded = new CookieCodec(SECRET, NAME).decode(value, TOKEN_BYTES, MAX_ATTRIBUTE_BYTES);
      if (!decoded.ok || !decoded.payload.equals(Buffer.concat([owner.token, owner.rest])))
        fail('the re-issued cookie is not the same session under the first key');
    }
    return false;
  }
  // No session of ours may show through: a clean, new, empty session.
  if (seen.marker !== null || seen.id !== null || !seen.isNew || seen.size !== 0)
    fail('opened a session it has no valid cookie for');
  if (sent === undefined) {
    if (setCookies.length) fail('a request without our cookie got a Set-Cookie');
    return false;
  }
  if (setCookies.length !== 1 || !/^session=;/.test(setCookies[0]) || !/max-age=0/i.test(setCookies[0]))
    fail('a rejected cookie must get exactly one removal');
  return true;
}

/** Runs `fn` over `items`, at most `limit` at a time. */
async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

const verb = (statement: string) => statement.trim().split(/\s+/)[0].toLowerCase();

/**
 * BATCH cases, sent CONCURRENCY at a time.  fast-check prints a failing batch as a
 * one-line summary: the error under it names the case that failed, in full.
 */
function batchOf(cases: fc.Arbitrary<Case>): fc.Arbitrary<Case[]> {
  return fc.array(cases, { minLength: BATCH, maxLength: BATCH }).map((batch) =>
    Object.assign(batch, {
      [fc.toStringMethod]: () => `[a batch of ${batch.length} cookies: ${batch.map((item) => item.kind).join(', ')}]`,
    }),
  );
}

/* ---------------------------------------------------------------- the suites */

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/**
 * Opens a session holding `marker` (with its own Path and Domain if `own`), sending `cookie` if given; returns its
 * cookie value.
 */
async function open(h: Harness, marker: string, own: boolean, cookie?: string): Promise<string> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    ...(cookie === undefined ? {} : { cookie: `${NAME}=${cookie}` }),
  };
  const response = await fetch(`${h.url}/open`, { method: 'POST', headers, body: JSON.stringify({ marker, own }) });
  expect(response.status).toBe(200);
  const setCookies = response.headers.getSetCookie();
  expect(setCookies).toHaveLength(1);
  const value = /^session=([^;]+)/.exec(setCookies[0])?.[1];
  if (!value) throw new Error('the app sent no session cookie');
  return value;
}

for (const app of APPS) {
  for (const db of databases.filter((candidate) => app.on(candidate.name))) {
    describe.skipIf(db.skip)(`generated cookies, ${app.name}, on ${db.name}`, () => {
      let h: Harness;
      let world: World;

      beforeAll(async () => {
        h = await harness(db, { entity: app.entity, options: { secret: [SECRET, OLD_KEY] }, routes });
        const current = new CookieCodec(SECRET, NAME);
        const old = new CookieCodec(OLD_KEY, NAME);
        world = { genuine: [], valid: new Map(), carriesAttributes: app.carriesAttributes };
        for (let i = 0; i < LIVE_SESSIONS + REVOKED_SESSIONS; i++) {
          const marker = `marker-${i}-${randomBytes(8).toString('hex')}`;
          const value = await open(h, marker, app.carriesAttributes && i % 2 === 1);
          const decoded = current.decode(value, TOKEN_BYTES, app.carriesAttributes ? MAX_ATTRIBUTE_BYTES : 0);
          if (!decoded.ok) throw new Error('the app issued a cookie it cannot read');
          const payload = Buffer.from(decoded.payload);
          const [token, rest] = [payload.subarray(0, TOKEN_BYTES), payload.subarray(TOKEN_BYTES)];
          const oldValue = old.encode(payload);
          if (i >= LIVE_SESSIONS) {
            // Revoked: its cookies are still well-formed and authentic, but name no row.
            await h.orm.em.fork().nativeDelete(app.entity, { id: sha256(token) });
            world.genuine.push({ value, token }, { value: oldValue, token });
            continue;
          }
          const owner: Owner = { marker, id: sha256(token), token, rest, stale: false };
          const staleOwner: Owner = { ...owner, stale: true };
          world.genuine.push({ value, token, owner }, { value: oldValue, token, owner: staleOwner });
          world.valid.set(value, owner).set(oldValue, staleOwner);
        }
        expect(await h.orm.em.fork().count(app.entity, {})).toBe(LIVE_SESSIONS);
      });
      afterAll(() => h?.close());

      test('each session reads its own marker through its cookie; its row id is the SHA-256 of the token, and the row holds no form of the token', async () => {
        for (const [value, owner] of world.valid) {
          const seen = await fetch(`${h.url}/whoami`, { headers: { cookie: `${NAME}=${value}` } });
          expect(await seen.json()).toEqual({ isNew: false, id: owner.id, marker: owner.marker, size: 1 });
          const row = await h.orm.em.fork().findOneOrFail(app.entity, { id: owner.id });
          const stored = JSON.stringify(row);
          for (const spelling of [
            owner.token.toString('hex'),
            owner.token.toString('base64url'),
            owner.token.toString('base64'),
            value,
          ])
            expect(stored).not.toContain(spelling);
        }
      });

      test(
        `${app.runs * BATCH} generated cookies: no 5xx, only an exact valid cookie opens its session, nothing written`,
        { timeout: 600_000 },
        async () => {
          let sentCount = 0;
          let opened = 0;
          let rejected = 0;
          await fc.assert(
            fc.asyncProperty(batchOf(cases(world)), async (batch) => {
              const statements = h.sql.length;
              const events = h.events.length;
              const rejections = await inParallel(batch, CONCURRENCY, (item) => check(h, world, item));
              const sessionCookies = batch.filter((item) => sessionValueOf(item.header) !== undefined).length;
              sentCount += batch.length;
              rejected += rejections.filter(Boolean).length;
              opened += sessionCookies - rejections.filter(Boolean).length;
              const verbs = new Set(h.sql.slice(statements).map(verb));
              verbs.delete('select');
              expect([...verbs], 'statements other than SELECT').toEqual([]);
              expect(h.events.length - events, 'one event per rejected cookie').toBe(rejections.filter(Boolean).length);
            }),
            { numRuns: app.runs, seed: SEED, endOnFailure: true },
          );
          expect(sentCount).toBeGreaterThanOrEqual(app.runs * BATCH);
          // The generator reaches both sides of the property.
          expect(opened).toBeGreaterThan(app.runs);
          expect(rejected).toBeGreaterThan(sentCount / 2);

          // Nothing was created or destroyed, and each session still reads its own marker.
          expect(await h.orm.em.fork().count(app.entity, {})).toBe(LIVE_SESSIONS);
          for (const [value, owner] of world.valid) {
            const seen = await fetch(`${h.url}/whoami`, { headers: { cookie: `${NAME}=${value}` } });
            expect(await seen.json()).toMatchObject({ marker: owner.marker, id: owner.id });
          }
        },
      );

      // Strict session management: the server never adopts an id the client brings, even in an envelope made with its
      // own key.
      test('a cookie naming a token that has no row never becomes the id of the session a write then creates', async () => {
        for (const key of [SECRET, OLD_KEY]) {
          const chosen = randomBytes(TOKEN_BYTES);
          const value = await open(h, 'strict', false, new CookieCodec(key, NAME).encode(chosen));
          const decoded = new CookieCodec(SECRET, NAME).decode(
            value,
            TOKEN_BYTES,
            app.carriesAttributes ? MAX_ATTRIBUTE_BYTES : 0,
          );
          if (!decoded.ok) throw new Error('the app issued a cookie it cannot read');
          const token = decoded.payload.subarray(0, TOKEN_BYTES);
          expect(token.equals(chosen)).toBe(false);
          expect(await h.orm.em.fork().count(app.entity, { id: sha256(chosen) })).toBe(0);
          expect(await h.orm.em.fork().nativeDelete(app.entity, { id: sha256(token) })).toBe(1);
        }
      });
    });
  }
}
