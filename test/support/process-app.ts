// One app process of several on one database, started by test/processes.test.ts as
// `node test/support/process-app.ts` (Node's type stripping, as `npm start` runs the example).
// It imports the library by its package name, as an app does: Node resolves it to dist/.
//
// Environment: APP_INDEX (0, 1, 2: named in every answer), DB ('postgresql' or 'mariadb'), DB_URL,
// SESSION_SECRET, CLOCK_MS (the start of its clock, which stands still until POST /control/clock
// moves it), IDLE_TIMEOUT and GC_INTERVAL (seconds).
//
// It reports on stdout, one JSON object a line: {"event":"listening","port"} once it listens,
// {"event":"gc","deleted","batches"} for each session:gc, {"event":"gc-error","message"},
// {"event":"held"} when a request waits at the gate.  Every JSON answer of a route names the process
// ("app": APP_INDEX).  It stops on SIGTERM and when its stdin
// closes, so it never outlives the test that started it.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa, { type Context } from 'koa';
import type { MikroORM } from '@mikro-orm/core';
import { MikroORM as MariaDbORM } from '@mikro-orm/mariadb';
import { MikroORM as PostgreSqlORM } from '@mikro-orm/postgresql';
import { defineSessionEntity, IdleTimeout, session, Userid } from 'koa-mikro-session';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`process-app: ${name} is not set`);
  return value;
};
const report = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

const index = Number(env('APP_INDEX'));
// The same definition as ProcessSession in test/processes.test.ts, which creates the table.
const ProcessSession = defineSessionEntity({
  name: 'ProcessSession',
  tableName: 'process_session',
  features: [Userid, IdleTimeout],
});
const options = { clientUrl: env('DB_URL'), entities: [ProcessSession], debug: false };
const orm = (env('DB') === 'postgresql'
  ? await PostgreSqlORM.init(options)
  : await MariaDbORM.init(options)) as unknown as MikroORM;

let now = Number(env('CLOCK_MS'));
const sessions = session({
  orm,
  entity: ProcessSession,
  secret: env('SESSION_SECRET'),
  clock: () => now,
  idleTimeout: Number(env('IDLE_TIMEOUT')),
  gcInterval: Number(env('GC_INTERVAL')),
});

/** The collections of this process: what its session:gc events reported. */
const gc = { runs: 0, deleted: 0, errors: [] as string[] };
/** Requests answered entirely while a collection asked for by POST /control/gc ran. */
const requests = { answered: 0, insideCollection: 0 };
let collecting = 0;
let collectionEpoch = 0;

/** Where held requests wait after reading the session, until POST /control/release. */
let gate: { promise: Promise<void>; open: () => void } | undefined;
function newGate() {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}
async function hold(ctx: Context, body: { hold?: boolean }): Promise<void> {
  if (!body.hold) return;
  if (!gate) ctx.throw(500, 'no gate: POST /control/hold first');
  report({ event: 'held' });
  await gate.promise;
}

const control: Record<string, (ctx: Context, body: any) => unknown> = {
  'POST /control/clock': (_ctx, body) => ((now = body.ms), { now }),
  'POST /control/hold': () => ((gate = newGate()), { ok: true }),
  'POST /control/release': () => (gate?.open(), (gate = undefined), { ok: true }),
  // Runs a collection now, or waits for the one the gcInterval timer runs.
  'POST /control/gc': async () => {
    collecting++;
    collectionEpoch++;
    try {
      await sessions.collectGarbage();
    } finally {
      collecting--;
      collectionEpoch++;
    }
    return { gc, requests };
  },
  'GET /control/stats': () => ({ gc, requests }),
  'POST /control/revoke-user': async (_ctx, body) => ({ revoked: await sessions.revokeUserSessions(body.userid) }),
};

const routes: Record<string, (ctx: Context, body: any) => unknown> = {
  'GET /whoami': (ctx) => ({ userid: ctx.session.userid ?? null, isNew: ctx.session.isNew }),
  'POST /login': (ctx, body) => ((ctx.session.userid = body.userid), { userid: ctx.session.userid }),
  'POST /set': (ctx, body) => {
    for (const [key, value] of Object.entries(body)) ctx.session.set(key, value);
    return { ok: true };
  },
  'GET /get': (ctx) => ({ value: ctx.session.get(String(ctx.query.key)) ?? null }),
  // Read-modify-write: a concurrent change of the same key makes it a conflict (409).
  'POST /increment': async (ctx, body) => {
    const value = ((ctx.session.get(body.key) as number | undefined) ?? 0) + 1;
    await hold(ctx, body);
    ctx.session.set(body.key, value);
    return { value };
  },
  'POST /append': async (ctx, body) => {
    const list = (ctx.session.get(body.key) as unknown[] | undefined) ?? [];
    await hold(ctx, body);
    ctx.session.set(body.key, [...list, body.value]);
    return { length: list.length + 1 };
  },
  'POST /revoke': async (ctx, body) => ({ revoked: await ctx.session.revokeUserSessions(body) }),
};

const app = new Koa();
app.silent = true; // a 409 is an expected answer here, not something to print
app.on('session:gc', (result: { deleted: number; batches: number }) => {
  gc.runs++;
  gc.deleted += result.deleted;
  report({ event: 'gc', ...result });
});
app.on('session:gc-error', (error: Error) => {
  gc.errors.push(String(error?.message ?? error));
  report({ event: 'gc-error', message: String(error?.message ?? error) });
});
app.use(async (ctx, next) => {
  const key = `${ctx.method} ${ctx.path}`;
  if (control[key]) {
    ctx.body = await control[key](ctx, await readJson(ctx));
    return;
  }
  const inside = collecting > 0;
  const epoch = collectionEpoch;
  try {
    await next();
  } finally {
    requests.answered++;
    if (inside && epoch === collectionEpoch) requests.insideCollection++;
  }
});
app.use(sessions);
app.use(async (ctx) => {
  const route = routes[`${ctx.method} ${ctx.path}`];
  if (!route) ctx.throw(404);
  // Every answer names the process that gave it.
  ctx.body = { app: index, ...((await route(ctx, await readJson(ctx))) as object) };
});

async function readJson(ctx: Context): Promise<any> {
  if (ctx.method === 'GET') return {};
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

const server = createServer(app.callback());
server.listen(0, '127.0.0.1', () => report({ event: 'listening', port: (server.address() as AddressInfo).port }));

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  gate?.open();
  server.closeAllConnections();
  server.close();
  await sessions.close();
  await orm.close(true);
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.stdin.on('end', () => void stop());
process.stdin.on('error', () => void stop());
process.stdin.resume();
