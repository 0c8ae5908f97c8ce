// Shared by the contender servers: the database URL, the statement counter,
// the /__stats figures and the way every server starts and stops.
import { registerHooks } from 'node:module';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import Koa from 'koa';
import koaSession from 'koa-session';
import pg from 'pg';

export const PG_URL = process.env.BENCH_PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/bench';
export const POOL_MAX = 10;
export const SECRET_KEYS = ['bench-secret-not-for-production-0123456789'];

/**
 * Every statement any contender sends goes through pg's Client#query (MikroORM
 * 7 reaches PostgreSQL through the same `pg` package, deduplicated in
 * bench/node_modules), so one counter serves all of them, BEGIN and COMMIT included.
 */
export const stats = { requests: 0, statements: 0 };
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function countedQuery(...args) {
  stats.statements++;
  return query.apply(this, args);
};

/** The JSON of GET /__stats: cumulative counters; the load process takes deltas. */
export function statsBody() {
  const cpu = process.cpuUsage();
  return JSON.stringify({ ...stats, cpuUser: cpu.user, cpuSystem: cpu.system });
}

/** The URL of the library's built dist/ folder: ../dist, or the one BENCH_LIBRARY names. */
export function libraryDist() {
  return process.env.BENCH_LIBRARY
    ? pathToFileURL(resolve(process.env.BENCH_LIBRARY) + '/').href
    : new URL('../dist/', import.meta.url).href;
}

/**
 * The library in ../dist (or the built dist/ folder named by BENCH_LIBRARY, to
 * measure another version) resolves '@mikro-orm/*' from its own node_modules;
 * redirect it to bench/node_modules so the library and the bench share one
 * MikroORM (its `instanceof MikroORM` check needs that).
 */
export async function importLibrary() {
  const dist = libraryDist();
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (specifier.startsWith('@mikro-orm/') && context.parentURL?.startsWith(dist)) {
        return nextResolve(specifier, { ...context, parentURL: import.meta.url });
      }
      return nextResolve(specifier, context);
    },
  });
  return import(new URL('index.js', dist).href);
}

/** A module of the library's build that the package does not export (the design floor reuses PgSelect). */
export async function importLibraryModule(file) {
  return import(new URL(file, libraryDist()).href);
}

/** MikroORM over the bench database, configured the same way for the floor and the library. */
export async function initOrm(entities) {
  const { MikroORM } = await import('@mikro-orm/postgresql');
  return MikroORM.init({ clientUrl: PG_URL, entities, pool: { min: 0, max: POOL_MAX }, debug: false });
}

export function newPool() {
  return new pg.Pool({ connectionString: PG_URL, max: POOL_MAX });
}

/**
 * Listens on 127.0.0.1:$PORT, tells the runner it is ready (a line "ready" on
 * stdout), and closes cleanly on SIGTERM / SIGINT or when the runner goes away.
 */
export function serve(handler, close) {
  const port = Number(process.env.PORT);
  const server = createServer(handler);
  server.keepAliveTimeout = 60_000;
  server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    server.closeAllConnections?.();
    server.close();
    try {
      await close?.();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('disconnect', stop); // the runner's IPC channel closed: it died
}

/** A Koa context over an in-memory request, as a server would make it, without HTTP (cpu.mjs, conflicts.mjs). */
export function inMemoryContext(app, method, cookie) {
  const req = new IncomingMessage(new Socket());
  req.method = method;
  req.url = '/';
  req.headers = cookie ? { host: 'localhost', cookie } : { host: 'localhost' };
  return app.createContext(req, new ServerResponse(req));
}

/**
 * Every Koa server's first middleware: answers /__stats, counts every other
 * request (and calls `onRequest`, e.g. to move a test clock), then goes on.
 */
export function countRequests(onRequest) {
  return (ctx, next) => {
    if (ctx.path === '/__stats') {
      ctx.type = 'json';
      ctx.body = statsBody();
      return;
    }
    stats.requests++;
    onRequest?.();
    return next();
  };
}

/** koa-session's external store over `pg` (`table`, made anew): what its README's examples do. */
export async function koaSessionPgStore(pool, table = 'bench_koa_session') {
  await pool.query(`drop table if exists ${table}`);
  await pool.query(`create table ${table} (sid text primary key, sess json not null, expire timestamptz not null)`);
  return {
    async get(key) {
      const { rows } = await pool.query(`select sess from ${table} where sid = $1 and expire > now()`, [key]);
      return rows[0]?.sess;
    },
    async set(key, sess, maxAge) {
      await pool.query(
        `insert into ${table} (sid, sess, expire) values ($1, $2, now() + $3 * interval '1 millisecond')
         on conflict (sid) do update set sess = excluded.sess, expire = excluded.expire`,
        [key, JSON.stringify(sess), typeof maxAge === 'number' ? maxAge : 86_400_000],
      );
    },
    async destroy(key) {
      await pool.query(`delete from ${table} where sid = $1`, [key]);
    },
  };
}

/** The scenario routes of the koa-session contenders, on `ctx.session.n`. */
export function koaSessionRoutes(ctx) {
  switch (ctx.path) {
    case '/ignore':
      ctx.body = 'ok';
      return;
    case '/read':
      ctx.body = String(ctx.session.n);
      return;
    case '/write':
    case '/new':
      ctx.session.n = (ctx.session.n ?? 0) + 1;
      ctx.body = 'ok';
      return;
    default:
      ctx.status = 404;
  }
}

/**
 * The koa-session contenders' app (server-koa-session*.mjs): /__stats, the
 * `before` middleware, koa-session with its defaults (signed cookie) and
 * `store`, then the scenario routes.
 */
export function koaSessionApp(store, ...before) {
  const app = new Koa();
  app.keys = SECRET_KEYS;
  app.use(countRequests());
  for (const middleware of before) app.use(middleware);
  app.use(koaSession({ store }, app));
  app.use(koaSessionRoutes);
  return app;
}

/**
 * bench:cookie's and bench:row's way to time small pieces in one process:
 * each of `pieces` (name → function) is called `calls` times once unmeasured,
 * then `runs` times interleaved; the best and the median CPU µs per call are
 * printed under `heading`.
 */
export function printPieceCosts(pieces, { calls, runs, heading }) {
  const measure = (fn) => {
    const before = process.cpuUsage();
    for (let n = 0; n < calls; n++) fn();
    const used = process.cpuUsage(before);
    return (used.user + used.system) / calls;
  };
  const results = Object.fromEntries(Object.keys(pieces).map((name) => [name, []]));
  for (const fn of Object.values(pieces)) measure(fn);
  for (let run = 0; run < runs; run++) for (const [name, fn] of Object.entries(pieces)) results[name].push(measure(fn));
  console.log(heading);
  for (const [name, times] of Object.entries(results)) {
    times.sort((a, b) => a - b);
    console.log(
      `${name.padEnd(46)} best ${times[0].toFixed(2).padStart(6)}   median ${times[runs >> 1].toFixed(2).padStart(6)}`,
    );
  }
}
