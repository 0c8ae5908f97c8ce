// `npm run bench:cpu`: the server CPU this library spends per request, in one
// process and without HTTP, so that what is left is the middleware, MikroORM
// and the PostgreSQL round trips.  Koa contexts are made over in-memory
// requests, 8 at a time (as 8 connections would), and each scenario is
// measured 5 times, interleaved; the best and the median are printed.  Used
// for the before/after figures of BENCHMARKS.md, where a change of 10–30 µs
// is lost in the noise of a full HTTP run.  Beside the CPU, the V8 heap bytes
// allocated per request (see allocatedBytes below): a short-lived object per
// request costs nothing now and garbage-collection CPU later.  BENCH_LIBRARY
// picks another built dist/ folder (see common.mjs); BENCH_PG_URL the database;
// BENCH_SCENARIOS some of the scenarios.  The "sqlite:" and "mariadb:"
// scenarios run the library on those databases (SQLite in memory, so that no
// fsync is counted; MariaDB at BENCH_MARIADB_URL, by default its bench database), the others on PostgreSQL.
import { once } from 'node:events';
import { GCProfiler, getHeapStatistics } from 'node:v8';
import Koa from 'koa';
import koaSessionMiddleware from 'koa-session';
import { RequestContext } from '@mikro-orm/core';
import { MikroORM as SqliteORM } from '@mikro-orm/sqlite';
import { MikroORM as MariaDbORM } from '@mikro-orm/mariadb';
import { designFloor } from './floor-design.mjs';
import {
  SECRET_KEYS,
  importLibrary,
  initOrm,
  inMemoryContext,
  koaSessionPgStore,
  koaSessionRoutes,
  newPool,
} from './common.mjs';

// BENCH_REQUESTS, BENCH_WARMUP and BENCH_RUNS set its length (bench:instructions does).
const N = Number(process.env.BENCH_REQUESTS ?? 3000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? N / 2);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const { defineSessionEntity, session, generateSecretKey, IdleTimeout } = await importLibrary();
const Plain = defineSessionEntity({ name: 'CpuSession', tableName: 'bench_cpu_session' });
const Due = defineSessionEntity({ name: 'CpuDueSession', tableName: 'bench_cpu_due_session', features: [IdleTimeout] });
const Floor = defineSessionEntity({ name: 'CpuFloorSession', tableName: 'bench_cpu_floor' });
const orm = await initOrm([Plain, Due, Floor]);
await orm.schema.refresh();
const secret = generateSecretKey();
let ticks = 0;
const plain = session({ orm, entity: Plain, secret });
// Every read extends: the clock moves one second per request.
const due = session({ orm, entity: Due, secret, idleTimeout: 1800, clock: () => Date.now() + ticks++ * 1000 });

const app = new Koa();
const context = (cookie) => inMemoryContext(app, 'GET', cookie);
async function newSession(middleware) {
  const ctx = context();
  await middleware(ctx, async () => {
    ctx.session.set('n', 1);
  });
  return ctx.response.get('set-cookie')[0].split(';')[0];
}
const cookies = { plain: [], due: [] };
for (let i = 0; i < 8; i++) {
  cookies.plain.push(await newSession(plain));
  cookies.due.push(await newSession(due));
}
const select = `select * from "bench_cpu_session" where "id" = ?`;

// A table of this process's own on MariaDB's bench database (created if missing): bench:instructions runs two at a time.
const MariaDbSession = defineSessionEntity({
  name: 'CpuMariaDbSession',
  tableName: `bench_cpu_session_${process.pid}`,
});
/** The library's middleware over another database (`orm`), with 8 sessions of its own. */
async function libraryOn(orm, entity = Plain) {
  await orm.schema.refresh();
  const middleware = session({ orm, entity, secret });
  const sessionCookies = [];
  for (let i = 0; i < 8; i++) sessionCookies.push(await newSession(middleware));
  return { orm, middleware, cookies: sessionCookies };
}
// Started only when a scenario of theirs runs: in one process, MikroORM's code shared by several drivers runs
// polymorphic, which alone adds some 10 k instructions to a PostgreSQL read (BENCHMARKS.md, fifth step).
const OTHER_DATABASES = {
  sqlite: async () => libraryOn(await SqliteORM.init({ dbName: ':memory:', entities: [Plain], debug: false })),
  mariadb: async () =>
    libraryOn(
      await MariaDbORM.init({
        clientUrl: process.env.BENCH_MARIADB_URL ?? 'mysql://root@127.0.0.1:3306/bench',
        entities: [MariaDbSession],
        ensureDatabase: true,
        pool: { max: 10 },
        debug: false,
      }),
      MariaDbSession,
    ),
};
// BENCH_SCENARIOS='new session,design floor: new session' keeps these (for a --cpu-prof of one of them).
const only = process.env.BENCH_SCENARIOS?.split(',');
const others = {};
for (const [name, start] of Object.entries(OTHER_DATABASES))
  if (!only || only.some((scenario) => scenario.startsWith(`${name}: `))) others[name] = await start();
/** Read, write and new-session scenarios of the library on each of `others`. */
const otherScenarios = Object.fromEntries(
  Object.entries(others).flatMap(([name, { middleware, cookies: sessionCookies }]) => [
    [
      `${name}: read a value`,
      (i) => {
        const ctx = context(sessionCookies[i]);
        return middleware(ctx, async () => {
          ctx.body = String(ctx.session.get('n'));
        });
      },
    ],
    [
      `${name}: write a value`,
      (i) => {
        const ctx = context(sessionCookies[i]);
        return middleware(ctx, async () => {
          ctx.session.set('n', ctx.session.get('n') + 1);
        });
      },
    ],
    [
      `${name}: new session`,
      () => {
        const ctx = context();
        return middleware(ctx, async () => {
          ctx.session.set('n', 1);
        });
      },
    ],
  ]),
);

// The two references for a new session and a read: the design floor (floor-design.mjs) and koa-session + pg, run
// here the same way, so that the library's CPU can be set beside theirs without HTTP's noise.
const floorRoutes = await designFloor(orm, Floor, '"bench_cpu_floor"');
const floor = (ctx) =>
  RequestContext.create(orm.em, () => {
    ctx.em = RequestContext.getEntityManager();
    return floorRoutes(ctx);
  });
const floorCookies = Array.from({ length: 8 }, (_, i) => `session=${'x'.repeat(60)}${i}`);
const pool = newPool();
const koaSessionApp = new Koa();
koaSessionApp.keys = SECRET_KEYS;
const koaSession = koaSessionMiddleware(
  { store: await koaSessionPgStore(pool, 'bench_cpu_koa_session') },
  koaSessionApp,
);
async function koaSessionRequest(path, cookie) {
  const ctx = inMemoryContext(koaSessionApp, 'GET', cookie);
  ctx.path = path;
  await koaSession(ctx, () => koaSessionRoutes(ctx));
  return ctx;
}
const koaSessionCookies = [];
for (let i = 0; i < 8; i++) {
  const ctx = await koaSessionRequest('/new');
  koaSessionCookies.push(
    ctx.response
      .get('set-cookie')
      .map((header) => header.split(';')[0])
      .join('; '),
  );
}

const scenarios = {
  'floor: fork + 1 SELECT': () =>
    RequestContext.create(orm.em, () => RequestContext.getEntityManager().getConnection().execute(select, ['x'])),
  'read a value': (i) => {
    const ctx = context(cookies.plain[i]);
    return plain(ctx, async () => {
      ctx.body = String(ctx.session.get('n'));
    });
  },
  'write a value': (i) => {
    const ctx = context(cookies.plain[i]);
    return plain(ctx, async () => {
      ctx.session.set('n', ctx.session.get('n') + 1);
    });
  },
  'new session': () => {
    const ctx = context();
    return plain(ctx, async () => {
      ctx.session.set('n', 1);
    });
  },
  'design floor: read a value': (i) => {
    const ctx = context(floorCookies[i]);
    ctx.path = '/read';
    return floor(ctx);
  },
  'design floor: write a value': (i) => {
    const ctx = context(floorCookies[i]);
    ctx.path = '/write';
    return floor(ctx);
  },
  'design floor: new session': () => {
    const ctx = context();
    ctx.path = '/new';
    return floor(ctx);
  },
  'koa-session + pg: read a value': (i) => koaSessionRequest('/read', koaSessionCookies[i]),
  'koa-session + pg: write a value': (i) => koaSessionRequest('/write', koaSessionCookies[i]),
  'koa-session + pg: new session': () => koaSessionRequest('/new'),
  ...otherScenarios,
  'read with idle extension due': (i) => {
    const ctx = context(cookies.due[i]);
    return due(ctx, async () => {
      ctx.body = String(ctx.session.get('n'));
    });
  },
};

/**
 * Bytes allocated on the V8 heap while `run` runs.  V8 keeps no running total of allocations, but
 * the heap's used size only grows by allocation and only shrinks by garbage collection, so
 *   allocated = used at the end − used at the start + Σ over the collections in between (used
 *               before − used after)
 * where v8.GCProfiler reports the used size before and after every collection (scavenges and
 * mark-compacts alike; sweeping credits a page's dead bytes when the collection ends, so "after"
 * is what survived).  Process-wide: the middleware, MikroORM, pg's parsing of the replies and the
 * in-memory Koa context all count; Buffer contents (off-heap) do not.  Checked against arrays of
 * known size: exact to a few bytes per object, plus the filler V8 leaves at the end of a page
 * when an object does not fit, which is what makes the young generation fill up too.
 */
async function allocatedBytes(run) {
  const profiler = new GCProfiler();
  profiler.start();
  const start = getHeapStatistics().used_heap_size;
  await run();
  const end = getHeapStatistics().used_heap_size;
  let freed = 0;
  for (const gc of profiler.stop().statistics)
    freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
  return end - start + freed;
}

/**
 * With BENCH_PAUSE set (bench:instructions), says `word` on stdout and waits for
 * a line on stdin: after the warm-up, so that callgrind's counting can be switched
 * on, and after the measured runs, so that the count can be dumped.
 */
async function pause(word) {
  if (!process.env.BENCH_PAUSE) return;
  process.stdout.write(`${word}\n`);
  process.stdin.resume();
  await once(process.stdin, 'data');
  process.stdin.pause(); // lets the process exit at the end
}

/** CPU µs and V8 heap bytes allocated per request over n requests, 8 at a time. */
async function measure(fn, n) {
  const before = process.cpuUsage();
  const bytes = await allocatedBytes(() =>
    Promise.all(
      Array.from({ length: 8 }, async (_, worker) => {
        for (let i = 0; i < n / 8; i++) await fn(worker);
      }),
    ),
  );
  const used = process.cpuUsage(before);
  return { cpu: (used.user + used.system) / n, alloc: bytes / n };
}

const unknown = only?.filter((name) => !(name in scenarios));
if (unknown?.length)
  throw new Error(
    `BENCH_SCENARIOS: no scenario ${unknown.join(', ')}; the scenarios: ${Object.keys(scenarios).join(', ')}`,
  );
if (only) for (const name of Object.keys(scenarios)) if (!only.includes(name)) delete scenarios[name];
const results = Object.fromEntries(Object.keys(scenarios).map((name) => [name, []]));
for (const fn of Object.values(scenarios)) await measure(fn, WARMUP);
await pause('warm');
for (let run = 0; run < RUNS; run++)
  for (const [name, fn] of Object.entries(scenarios)) results[name].push(await measure(fn, N));
await pause('measured');
console.log(
  `CPU µs per request and V8 heap KiB allocated per request, in-process, 8 concurrent, ${N} requests × ${RUNS} runs (library: ${process.env.BENCH_LIBRARY ?? 'dist/'})`,
);
for (const [name, runs] of Object.entries(results)) {
  const cpu = runs.map((r) => r.cpu).sort((a, b) => a - b);
  const alloc = runs.map((r) => r.alloc / 1024).sort((a, b) => a - b);
  console.log(
    `${name.padEnd(32)} best ${cpu[0].toFixed(0).padStart(4)}   median ${cpu[RUNS >> 1].toFixed(0).padStart(4)}` +
      `   alloc KiB/request ${alloc[RUNS >> 1].toFixed(1).padStart(6)} (${alloc[0].toFixed(1)}–${alloc[RUNS - 1].toFixed(1)})`,
  );
}
await orm.close();
await others.mariadb?.orm.schema.drop();
for (const other of Object.values(others)) await other.orm.close();
await pool.end();
