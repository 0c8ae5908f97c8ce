// `npm run bench:select`: one primary-key SELECT three ways, 8 at a time, as the
// session load sends it: MikroORM's connection.execute() (the text with the id
// inlined, through Kysely and the logger), a pg named prepared statement (what
// the library uses on PostgreSQL, src/prepared-select.ts), and pg's unnamed
// parameterised query. Prints the app's CPU per statement (process.cpuUsage())
// and PostgreSQL's (its backend processes' user + system ticks from /proc, so
// the server must run on this machine). 7 interleaved runs of 8000 statements.
import { readFileSync, readdirSync } from 'node:fs';
import { initOrm } from './common.mjs';
import { defineEntity, p } from '@mikro-orm/core';
const T = defineEntity({
  name: 'SelectPathsRow',
  tableName: 'bench_select_paths',
  properties: { id: p.string().primary(), data: p.json() },
});
const orm = await initOrm([T]);
await orm.schema.refresh();
const em = orm.em.fork();
for (let i = 0; i < 8; i++) em.persist(em.create(T, { id: 'k' + i, data: { n: i } }));
await em.flush();
const conn = orm.em.getConnection();
const pool = await conn.getNativeClient();
const sqlQ = 'select * from "bench_select_paths" where "id" = ?';
const text = 'select * from "bench_select_paths" where "id" = $1';
/** CPU time of every PostgreSQL process on this machine, µs. */
const pgCpu = () => {
  let t = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.startsWith('postgres:')) continue;
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      t += +f[11] + +f[12];
    } catch {}
  }
  return t * 10_000; // clock ticks of 10 ms
};
const ways = {
  execute: (i) => conn.execute(sqlQ, ['k' + i], 'all'),
  named: (i) => pool.query({ name: 'bench_select_paths', text, values: ['k' + i] }),
  unnamed: (i) => pool.query({ text, values: ['k' + i] }),
};
async function measure(fn, n) {
  const c = process.cpuUsage();
  const pg0 = pgCpu();
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < n / 8; i++) await fn(w);
    }),
  );
  const u = process.cpuUsage(c);
  return [(u.user + u.system) / n, (pgCpu() - pg0) / n];
}
const N = 8000;
const res = {};
for (const [k, f] of Object.entries(ways)) await measure(f, 2000);
for (let r = 0; r < 7; r++) for (const [k, f] of Object.entries(ways)) (res[k] ??= []).push(await measure(f, N));
for (const [k, v] of Object.entries(res)) {
  const app = v.map((x) => x[0]).sort((a, b) => a - b);
  const db = v.map((x) => x[1]).sort((a, b) => a - b);
  console.log(
    k.padEnd(8),
    'app µs best',
    app[0].toFixed(1),
    'median',
    app[3].toFixed(1),
    '| postgres µs median',
    db[3].toFixed(1),
  );
}
await orm.close();
