// `npm run bench:conflicts`: how many of 8 parallel writers of one session get
// 409, in-process on PostgreSQL (as bench/cpu.mjs: Koa contexts over
// in-memory requests, 8 at a time).  Two workloads: every writer increments
// the same key (a read-modify-write: at most one of a round can stand), and
// every writer sets a key of its own (nothing collides: with merging, all
// stand).  ROUNDS rounds of 8 requests each, all 8 released together.
// BENCH_LIBRARY picks another built dist/ folder, for before/after figures.
import Koa from 'koa';
import { importLibrary, initOrm, inMemoryContext } from './common.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 200);
const WRITERS = 8;
const { defineSessionEntity, session, generateSecretKey } = await importLibrary();
const Entity = defineSessionEntity({ name: 'ConflictSession', tableName: 'bench_conflict_session' });
const orm = await initOrm([Entity]);
await orm.schema.refresh();
const middleware = session({ orm, entity: Entity, secret: generateSecretKey() });
const app = new Koa();

const context = (cookie) => inMemoryContext(app, 'POST', cookie);

/** One request; resolves to its status (the 409 of a conflict is an error the middleware throws). */
async function request(cookie, route) {
  const ctx = context(cookie);
  try {
    await middleware(ctx, () => route(ctx));
    return 200;
  } catch (error) {
    return error.status ?? 500;
  }
}

/** Every writer waits here after reading, so all 8 decide on the same row before any commits. */
function barrier(count) {
  let arrived = 0;
  let open;
  const opened = new Promise((resolve) => (open = resolve));
  return () => (++arrived === count && open(), opened);
}

const workloads = {
  'same key (read-modify-write)': (wait) => async (ctx) => {
    const n = ctx.session.get('n') ?? 0;
    await wait();
    ctx.session.set('n', n + 1);
  },
  'own key per writer': (wait, writer) => async (ctx) => {
    await wait();
    ctx.session.set(`k${writer}`, Date.now());
  },
};

console.log(
  `409s of ${WRITERS} parallel writers of one session, ${ROUNDS} rounds (library: ${process.env.BENCH_LIBRARY ?? 'dist/'})`,
);
for (const [name, workload] of Object.entries(workloads)) {
  const first = context();
  await middleware(first, async () => first.session.set('start', true));
  const cookie = first.response.get('set-cookie')[0].split(';')[0];
  const counts = { 200: 0, 409: 0, other: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    const wait = barrier(WRITERS);
    const statuses = await Promise.all(
      Array.from({ length: WRITERS }, (_, writer) => request(cookie, workload(wait, writer))),
    );
    for (const status of statuses) counts[status in counts ? status : 'other']++;
  }
  const total = ROUNDS * WRITERS;
  console.log(
    `${name.padEnd(30)} 409: ${((100 * counts[409]) / total).toFixed(1).padStart(5)} %   committed: ${counts[200]}   other: ${counts.other}`,
  );
}
await orm.close();
