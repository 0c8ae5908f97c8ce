// Garbage-collection benchmark: time and peak memory to delete 1,000,000 expired
// sessions out of 2,000,000, on SQLite (a temporary file) and PostgreSQL.
// Run: npm run build && node bench/gc.mjs [rows] (Node >= 22.17; npm scripts use Node 24).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MikroORM as SqliteORM } from '@mikro-orm/sqlite';
import { MikroORM as PostgreSqlORM } from '@mikro-orm/postgresql';
import { collectGarbage, defineSessionEntity, IdleTimeout } from '../dist/index.js';

const total = Number(process.argv[2] ?? 2_000_000);
const expired = total / 2;
const now = Date.UTC(2026, 0, 1);
const nowSeconds = now / 1000;
const Session = defineSessionEntity({ tableName: 'gc_bench_session', features: [IdleTimeout] });

/** Fills the table with `total` rows, the first half expired, in a few large statements. */
async function fill(orm, dialect) {
  const conn = orm.em.getConnection();
  const chunk = 100_000;
  for (let start = 0; start < total; start += chunk) {
    const end = Math.min(total, start + chunk) - 1;
    if (dialect === 'postgresql') {
      await conn.execute(`insert into gc_bench_session (id, created, version, data, flash, idle_expire)
        select lpad(to_hex(g), 64, '0'), ${nowSeconds - 3600}, 1, '{}', '{}',
               case when g < ${expired} then ${nowSeconds - 60} else ${nowSeconds + 3600} end
        from generate_series(${start}, ${end}) as g`);
    } else {
      await conn.execute(`with recursive g(n) as (select ${start} union all select n + 1 from g where n < ${end})
        insert into gc_bench_session (id, created, version, data, flash, idle_expire)
        select printf('%064x', n), ${nowSeconds - 3600}, 1, '{}', '{}',
               case when n < ${expired} then ${nowSeconds - 60} else ${nowSeconds + 3600} end from g`);
    }
  }
}

async function bench(name, init) {
  const orm = await init();
  await orm.schema.refresh();
  await fill(orm, name);
  const rss = () => process.memoryUsage().rss;
  const heap = () => process.memoryUsage().heapUsed;
  let heapPeak = heap();
  global.gc?.();
  const before = rss();
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rss());
    heapPeak = Math.max(heapPeak, heap());
  }, 50);
  const started = performance.now();
  const result = await collectGarbage({
    orm,
    entity: Session,
    idleTimeout: 3600,
    clock: () => now,
    onBatch: () => {
      peak = Math.max(peak, rss());
      heapPeak = Math.max(heapPeak, heap());
    },
  });
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  const left = await orm.em.fork().count(Session, {});
  await orm.close(true);
  const mb = (bytes) => (bytes / 2 ** 20).toFixed(1);
  console.log(
    `${name}: deleted ${result.deleted} of ${total} in ${result.batches} batches, ${seconds.toFixed(1)} s ` +
      `(${Math.round(result.deleted / seconds)} rows/s), RSS ${mb(before)} MiB before, peak ${mb(peak)} MiB (+${mb(peak - before)}), JS heap peak ${mb(heapPeak)} MiB, ${left} rows left`,
  );
}

const dir = mkdtempSync(join(tmpdir(), 'gc-bench-'));
try {
  await bench('sqlite', () => SqliteORM.init({ dbName: join(dir, 'gc.sqlite'), entities: [Session] }));
  await bench('postgresql', () =>
    PostgreSqlORM.init({
      clientUrl: process.env.PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/test',
      entities: [Session],
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
