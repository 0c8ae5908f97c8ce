import { defineEntity, p, type MikroORM } from '@mikro-orm/core';
import Koa, { type Context } from 'koa';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import {
  AbsoluteTimeout,
  ConfigurableAbsoluteTimeout,
  ConfigurableCookie,
  ConfigurableIdleTimeout,
  Csrf,
  csrfProtection,
  defineSessionEntity,
  FeatureNotEnabledError,
  IdleTimeout,
  SessionBase,
  session,
  Userid,
  type SessionEvent,
  type SessionOptions,
} from '../../src/index.js';
import { databases, type TestDatabase } from '../support/databases.js';
import { Gate, harness, Item, SECRET, Session, type Harness, type Route } from '../support/app.js';
import { Client, serve, type Reply } from '../support/http.js';

/*
 * Fixtures shared by the feature suites (and by settings.test.ts and
 * properties.test.ts, whose per-session cookie tests moved to cookie.test.ts).
 */

// ---------------------------------------------------------------------------
// Userid and Csrf: userid.test.ts and csrf.test.ts
// ---------------------------------------------------------------------------

export const UserSession = defineSessionEntity({
  name: 'UserSession',
  tableName: 'user_session',
  features: [Userid, Csrf],
});

/** Routes of the Userid suites; each answers JSON. */
export const userRoutes: Record<string, Route> = {
  'GET /whoami': (ctx) => ({ userid: ctx.session.userid }),
  'POST /login': (ctx, body) => {
    ctx.session.userid = body.userid;
    return { id: ctx.session.id };
  },
  'POST /regenerate': (ctx, body) => {
    if (body.set) for (const [key, value] of Object.entries(body.set)) ctx.session.set(key, value);
    ctx.session.regenerate();
    if (body.invalidate) ctx.session.invalidate();
    if (body.fail) throw new Error('the route failed after regenerate()');
    return { id: ctx.session.id };
  },
  'POST /invalidate-then-fail': (ctx) => {
    ctx.session.invalidate();
    throw new Error('the route failed after invalidate()');
  },
  'GET /sessions': async (ctx) => ({ sessions: await ctx.session.listUserSessions() }),
  'POST /revoke': async (ctx, body) => {
    // A password change: a new id for this session, and the others logged out.
    if (body.regenerate) ctx.session.regenerate();
    const count = await ctx.session.revokeUserSessions(body.keepCurrent ? { keepCurrent: true } : undefined);
    if (body.fail) throw new Error('the route failed after revokeUserSessions()');
    return { count };
  },
  'GET /csrf': (ctx) => ({ token: ctx.session.getCsrfToken() }),
  'POST /csrf': (ctx) => ({ token: ctx.session.newCsrfToken() }),
};

/** The payload of an event, without ctx (which is the request itself). */
export type Emitted = { name: string } & Omit<SessionEvent, 'ctx'>;

/** A harness with the Userid and Csrf entity that records the lifecycle events. */
export function userSuite(db: TestDatabase) {
  const s = {
    h: undefined as unknown as Harness,
    events: [] as Emitted[],
    /** The session's row as the database holds it, or null. */
    row: (id: string) => s.h.orm.em.fork().findOne(UserSession, { id }),
  };
  beforeAll(async () => {
    s.h = await harness(db, { entity: UserSession, routes: userRoutes });
    for (const name of ['session:created', 'session:regenerated', 'session:destroyed']) {
      s.h.app.on(name, ({ ctx: _, ...payload }: SessionEvent) => s.events.push({ name, ...payload }));
    }
  });
  afterAll(() => s.h?.close());
  return s;
}

/** What GET /state answers for this client. */
export const state = async (client: Client) => (await client.get('/state')).json;

/** The calls that need the Userid or the Csrf feature, by name. */
const featureCalls: Record<string, (ctx: Context) => unknown> = {
  'read userid': (ctx) => ctx.session.userid,
  'set userid': (ctx) => {
    ctx.session.userid = 1;
  },
  listUserSessions: (ctx) => ctx.session.listUserSessions(),
  revokeUserSessions: (ctx) => ctx.session.revokeUserSessions(),
  getCsrfToken: (ctx) => ctx.session.getCsrfToken(),
  newCsrfToken: (ctx) => ctx.session.newCsrfToken(),
};

/**
 * A harness on the default entity (neither Userid nor Csrf) behind
 * csrfProtection(); GET /call?name= makes one of the calls above and answers
 * the error it threw.  The app's errors go to `errors`; set up and closed
 * around the calling describe, as userSuite().
 */
export function featurelessSuite(db: TestDatabase) {
  const s = { h: undefined as unknown as Harness, errors: [] as Error[] };
  beforeAll(async () => {
    s.h = await harness(db, {
      middleware: [csrfProtection()],
      routes: {
        'GET /call': async (ctx) => {
          try {
            await featureCalls[String(ctx.query.name)](ctx);
            return { ok: true };
          } catch (error) {
            return {
              feature: error instanceof FeatureNotEnabledError ? error.feature : null,
              message: (error as Error).message,
            };
          }
        },
      },
    });
    s.h.app.on('error', (error: Error) => s.errors.push(error));
  });
  afterAll(() => s.h?.close());
  return s;
}

// ---------------------------------------------------------------------------
// IdleTimeout and AbsoluteTimeout: idle.test.ts and absolute.test.ts
// ---------------------------------------------------------------------------

export const Timeouts = defineSessionEntity({
  name: 'TimeoutsSession',
  tableName: 'timeouts_session',
  features: [IdleTimeout, AbsoluteTimeout],
});

/** Rebuilt by each harness: the gate POST /held-write waits at. */
export let gate = new Gate();

const timeoutRoutes: Record<string, Route> = {
  /** A write: sets the body's keys and answers the row id. */
  'POST /write': (ctx, body) => {
    for (const [key, value] of Object.entries(body)) ctx.session.set(key, value);
    return { id: ctx.session.id };
  },
  /** A write whose row was loaded before the gate and is changed after it. */
  'POST /held-write': async (ctx, body) => {
    ctx.session.get('k');
    await gate.pass();
    for (const [key, value] of Object.entries(body)) ctx.session.set(key, value);
    return { ok: true };
  },
  /** A read that also says whether the session is new. */
  'GET /peek': (ctx) => ({ value: ctx.session.get('k') ?? null, isNew: ctx.session.isNew }),
  'GET /expires': (ctx) => ({ expiresAt: ctx.session.expiresAt }),
  'POST /write-then-expires': (ctx) => {
    ctx.session.set('k', 'v');
    return { expiresAt: ctx.session.expiresAt };
  },
  'POST /regenerate': (ctx) => {
    ctx.session.regenerate();
    return { id: ctx.session.id, created: ctx.session.created };
  },
};

/** The harness of the current timeouts test (see timeoutsSuite()), or undefined between tests. */
export let h: Harness | undefined;
/** Lifecycle events of the current harness, in order. */
export let events: { name: string; id: string; reason?: string }[] = [];
/** Servers of restarted apps (see restarted()). */
let servers: { close(): Promise<void> }[] = [];

/**
 * Closes the timeouts harness (and restarted apps) after each test of the
 * calling describe, and returns its start(options): a new harness on Timeouts,
 * whose extensionChance draws come from `random`.
 */
export function timeoutsSuite(
  db: TestDatabase,
  random: () => number = () => 0,
): (options?: Partial<SessionOptions>) => Promise<Harness> {
  afterEach(async () => {
    for (const server of servers) await server.close();
    servers = [];
    await h?.close();
    h = undefined;
  });

  return async function start(options: Partial<SessionOptions> = {}): Promise<Harness> {
    gate = new Gate();
    events = [];
    h = await harness(db, { entity: Timeouts, routes: timeoutRoutes, options: { random, ...options } });
    for (const name of ['session:expired', 'session:destroyed', 'session:regenerated']) {
      h.app.on(name, (event: SessionEvent) => events.push({ name, id: event.id, reason: event.reason }));
    }
    return h;
  };
}

/**
 * The same app restarted with other settings: a second middleware over the
 * same database and clock, answering the GET routes.  Returns a client
 * holding `from`'s cookie.
 */
export async function restarted(options: Partial<SessionOptions>, from: Client): Promise<Client> {
  const app = new Koa();
  app.silent = true;
  app.use(session({ orm: h!.orm, entity: Timeouts, secret: SECRET, clock: h!.clock.now, ...options }));
  app.use(async (ctx) => {
    ctx.body = await timeoutRoutes[`GET ${ctx.path}`](ctx, undefined);
  });
  const server = await serve(app);
  servers.push(server);
  const client = new Client(server.url);
  await client.setCookie((await from.cookie())!);
  return client;
}

/** The clock in whole seconds. */
export const now = () => Math.floor(h!.clock.ms / 1000);
/** The row as the database holds it, or null. */
export const stored = (id: string) => h!.orm.em.fork().findOne(Timeouts, { id });

/** A client holding a new session (written at the current clock), and its row id. */
export async function login(data: Record<string, unknown> = { k: 'v' }) {
  const client = h!.client();
  const reply = await client.post('/write', data);
  expect(reply.status).toBe(200);
  return { client, id: reply.json.id as string };
}

/** A response that removes the session cookie. */
export function expectRemoval(reply: Reply): void {
  expect(reply.cookies).toHaveLength(1);
  expect(reply.cookies[0].key).toBe('session');
  expect(reply.cookies[0].value).toBe('');
  expect(reply.cookies[0].expiryTime()).toBeLessThan(Date.now());
}

/** A hand-written session entity embedding a timeout and its configurable variant. */
export const Twin = defineEntity({
  name: 'TwinSession',
  tableName: 'twin_session',
  extends: SessionBase,
  properties: {
    idle: () => p.embedded(IdleTimeout),
    tunedIdle: () => p.embedded(ConfigurableIdleTimeout),
  },
});

/**
 * The start-up errors suites: an ORM on SQLite for the calling describe, and
 * attempt(options, entity): a call of session() with those options.
 */
export function startupAttempts() {
  const sqlite = databases.find((db) => db.name === 'sqlite')!;
  let orm: MikroORM;
  beforeAll(async () => {
    orm = await sqlite.init([Session, Timeouts, Twin, Item]);
  });
  afterAll(() => orm.close(true));

  return (options: Partial<SessionOptions>, entity: SessionOptions['entity'] = Timeouts) =>
    () =>
      session({ orm, entity, secret: SECRET, ...options });
}

// ---------------------------------------------------------------------------
// ConfigurableCookie: cookie.test.ts, with settings.test.ts and properties.test.ts
// ---------------------------------------------------------------------------

export const Configurable = defineSessionEntity({
  tableName: 'configurable_session',
  features: [ConfigurableIdleTimeout, ConfigurableAbsoluteTimeout, ConfigurableCookie],
});

/** Runs `fn` on the settings and reports a thrown error instead of failing the request. */
const attemptRoute =
  (fn: (ctx: any, body: any) => void): Route =>
  (ctx, body) => {
    try {
      fn(ctx, body);
      return { ok: true };
    } catch (error) {
      return { error: (error as Error).name, message: (error as Error).message };
    }
  };

/** Routes of the per-session settings suites. */
export const settingsRoutes: Record<string, Route> = {
  'GET /settings': (ctx) => ctx.session.settings,
  'POST /edit': attemptRoute((ctx, body) =>
    ctx.session.settings.withEdit((s: any) => {
      for (const [name, value] of Object.entries(body)) s[name] = value;
    }),
  ),
  'POST /assign-outside-edit': attemptRoute((ctx) => {
    (ctx.session.settings as any).idleTimeout = 10;
  }),
  'POST /edit-unsaved': (ctx) => {
    const settings = ctx.session.settings as any;
    settings.edit();
    settings.idleTimeout = 9999;
    ctx.session.set('touched', true);
    return { during: settings.idleTimeout };
  },
  'POST /edit-discard': (ctx) => {
    const settings = ctx.session.settings as any;
    settings.edit();
    settings.idleTimeout = 9999;
    settings.discard();
    return { after: settings.idleTimeout };
  },
};

/**
 * A harness on Configurable with the settings routes, idleTimeout 60 and absoluteTimeout 86,400 unless `options` says
 * otherwise.
 */
export const configurableHarness = (db: TestDatabase, options: Partial<SessionOptions> = {}) =>
  harness(db, {
    entity: Configurable,
    options: { idleTimeout: 60, absoluteTimeout: 86_400, ...options },
    routes: settingsRoutes,
  });

export const PropSession = defineSessionEntity({
  name: 'PropSession',
  tableName: 'prop_session',
  features: [Userid, ConfigurableCookie],
});

/** Runs `fn` and answers with the error it threw, so a test can look at it. */
export function attempt(fn: () => unknown): unknown {
  try {
    return { value: fn() ?? null };
  } catch (error) {
    return { error: (error as Error).name, message: (error as Error).message };
  }
}

/** POST /prop: sets the body's keys as properties of ctx.session. */
export const setProperties: Route = (ctx, body) => {
  for (const [key, value] of Object.entries(body)) ctx.session[key] = value;
  return { ok: true };
};
