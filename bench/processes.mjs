// `npm run bench:processes`: the library's server (server-ours.mjs, default mode) as 1 and as 2
// processes on one PostgreSQL, behind Node's cluster module (cluster.mjs), both started at once
// and measured in turn, round by round, on the same scenarios as `npm run bench` (8 connections,
// one session cookie each; autocannon in its own process, load.mjs).  Where the CPU goes is read
// from /proc around each measured run: the server's processes (primary and workers), its
// PostgreSQL backends (found in pg_stat_activity by the application_name that PGAPPNAME gives
// them, so other users of the database don't count), PostgreSQL's background processes, the load
// generator, and the whole machine (/proc/stat), each divided by the requests autocannon completed.
// Environment: BENCH_ROUNDS (3), BENCH_DURATION (4 s), BENCH_WARMUP (0.5 s before each measurement),
// BENCH_FIRST_WARMUP (3 s per server and scenario before round 1), BENCH_CONNECTIONS (8),
// BENCH_PROCESSES (1,2), BENCH_PG_URL; BENCH_REPORT=0 prints without writing BENCHMARKS.md (it
// writes between <!-- bench:processes:start --> and <!-- bench:processes:end --> when they are there).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import pg from 'pg';
import { PG_URL } from './common.mjs';
import {
  createSession,
  ensureDatabase,
  loadGenerator,
  median,
  startChild,
  supervise,
  updateBenchmarks,
} from './runner.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION = Number(process.env.BENCH_DURATION ?? 4);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 0.5);
const FIRST_WARMUP = Number(process.env.BENCH_FIRST_WARMUP ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const PROCESSES = (process.env.BENCH_PROCESSES ?? '1,2').split(',').map(Number);
const WRITE_FILES = process.env.BENCH_REPORT !== '0';
const DEADLINE_MS = 5 * 60 * 1000;
const DATABASE = new URL(PG_URL).pathname.slice(1);
const here = new URL('.', import.meta.url);
const started = Date.now();

const SCENARIOS = [
  { id: 'read', label: 'read a value', path: '/read' },
  { id: 'write', label: 'write a value', path: '/write' },
  { id: 'new', label: 'new session each request', path: '/new', noCookie: true },
];

// Every child is stopped whatever way the run ends (runner.mjs).
const supervisor = supervise('bench:processes', DEADLINE_MS);
const load = loadGenerator(supervisor);

// ---- CPU from /proc ----
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);

/** User + system CPU of a process so far, in µs; 0 once it is gone. */
function cpuOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_US; // utime, stime
  } catch {
    return 0;
  }
}

/** The server's own processes, shared by every database: WAL writer, checkpointer, autovacuum... */
const BACKGROUND =
  /^postgres: (?:\S+: )?(?:checkpointer|background writer|walwriter|autovacuum|logical replication|stats collector)/;

/** The pids of PostgreSQL's processes whose title matches. */
function postgres(title) {
  const pids = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (title.test(readFileSync(`/proc/${name}/cmdline`, 'utf8'))) pids.push(Number(name));
    } catch {} // gone meanwhile
  }
  return pids;
}

/** Busy, I/O-wait and total time of the whole machine so far (/proc/stat), in µs of CPU. */
function machine() {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
  return { busy: (total - ticks[3] - ticks[4]) * TICK_US, iowait: ticks[4] * TICK_US, total: total * TICK_US };
}

/**
 * The backends serving `server`: each server's `pg` connections carry its own application_name
 * (PGAPPNAME), so a benchmark or test using the same database at the same time is not counted.
 */
let monitor;
async function backends(server) {
  const { rows } = await monitor.query('select pid from pg_stat_activity where application_name = $1', [server.name]);
  return rows.map((row) => row.pid);
}

async function snapshot(server) {
  return {
    app: [server.child.pid, ...server.pids].reduce((sum, pid) => sum + cpuOf(pid), 0),
    loader: cpuOf(load.start().pid),
    postgres: new Map((await backends(server)).map((pid) => [pid, cpuOf(pid)])),
    background: new Map(postgres(BACKGROUND).map((pid) => [pid, cpuOf(pid)])),
    machine: machine(),
  };
}

/** CPU spent between two snapshots, in µs.  A process that started meanwhile counts from its start. */
function spent(before, after) {
  const delta = (key) => {
    let sum = 0;
    for (const [pid, cpu] of after[key]) sum += cpu - (before[key].get(pid) ?? 0);
    return sum;
  };
  const postgres = delta('postgres');
  const background = delta('background');
  const app = after.app - before.app;
  const loader = after.loader - before.loader;
  const busy = after.machine.busy - before.machine.busy;
  const total = after.machine.total - before.machine.total;
  return {
    app,
    postgres,
    background,
    loader,
    other: busy - app - postgres - background - loader,
    busyShare: busy / total,
    iowaitShare: (after.machine.iowait - before.machine.iowait) / total,
  };
}

// ---- servers and load ----
/** server-ours.mjs in its default mode, on a table of its own (bench_kms_processes_<n>), as `workers` processes. */
function startServer(workers, port) {
  const name = `bench-processes-${workers}`;
  return startChild(supervisor, {
    args: [new URL('cluster.mjs', here).pathname, 'server-ours.mjs'],
    env: { WORKERS: String(workers), MODE: `processes-${workers}`, PORT: String(port), PGAPPNAME: name },
    label: `the ${workers}-process server`,
    timeoutMs: 60_000,
  }).then(({ child, output }) => ({
    count: workers,
    name,
    url: `http://127.0.0.1:${port}`,
    child,
    pids: /ready ([\d ]+)/.exec(output)[1].trim().split(' ').map(Number),
  }));
}

// ---- main ----
const postgresVersion = await ensureDatabase(PG_URL);
const servers = [];
monitor = new pg.Client({ connectionString: PG_URL, application_name: 'bench-processes-monitor' });
await monitor.connect();
try {
  let port = 4201;
  for (const count of PROCESSES) servers.push(await startServer(count, port++));
  const cookies = new Map();
  for (const server of servers) {
    const list = [];
    for (let i = 0; i < CONNECTIONS; i++) list.push(await createSession(server.url));
    if (list.some((cookie) => !cookie)) throw new Error(`${server.count}-process server set no cookie`);
    cookies.set(server, list);
  }
  const measure = (server, scenario, duration) =>
    load.run({
      url: server.url,
      path: scenario.path,
      cookies: scenario.noCookie ? null : cookies.get(server),
      connections: CONNECTIONS,
      duration,
      warmup: 0,
    });
  console.log(
    `bench:processes: ${servers.map((s) => `${s.count} process${s.count > 1 ? 'es' : ''}`).join(' and ')} up; ` +
      `PostgreSQL backends: ${(await Promise.all(servers.map(backends))).map((pids) => pids.length).join(' and ')}`,
  );
  for (const scenario of SCENARIOS) for (const server of servers) await measure(server, scenario, FIRST_WARMUP);

  const samples = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const scenario of SCENARIOS) {
      const order = servers.map((_, i) => servers[(i + round) % servers.length]);
      for (const server of order) {
        if (WARMUP > 0) await measure(server, scenario, WARMUP);
        const before = await snapshot(server);
        const result = await measure(server, scenario, DURATION);
        const cpu = spent(before, await snapshot(server));
        const requests = result.completed;
        const sample = {
          round,
          scenario: scenario.id,
          processes: server.count,
          reqPerSec: result.reqPerSec,
          non2xx: result.non2xx,
          errors: result.errors,
          p99: result.latencyP99,
          app: cpu.app / requests,
          postgres: cpu.postgres / requests,
          background: cpu.background / requests,
          loader: cpu.loader / requests,
          other: cpu.other / requests,
          busyShare: cpu.busyShare,
          iowaitShare: cpu.iowaitShare,
        };
        samples.push(sample);
        console.log(
          `round ${round + 1}/${ROUNDS} ${scenario.id.padEnd(6)} ${server.count} proc ${String(Math.round(sample.reqPerSec)).padStart(6)} req/s  ` +
            `app ${sample.app.toFixed(0).padStart(4)}  postgres ${sample.postgres.toFixed(0).padStart(4)}+${sample.background.toFixed(0)}  ` +
            `load ${sample.loader.toFixed(0).padStart(4)}  other ${sample.other.toFixed(0).padStart(4)} µs CPU/req  ` +
            `machine ${(sample.busyShare * 100).toFixed(0)} % busy, ${(sample.iowaitShare * 100).toFixed(0)} % iowait` +
            (sample.non2xx ? `  ${sample.non2xx} non-2xx` : '') +
            (sample.errors ? `  ${sample.errors} errors` : ''),
        );
      }
    }
  }

  const report = renderReport(samples, postgresVersion, (Date.now() - started) / 1000);
  console.log('\n' + report);
  if (WRITE_FILES) updateBenchmarks('processes', report);
} finally {
  await monitor.end();
  await supervisor.stop(5000);
}

function renderReport(samples, postgresVersion, elapsed) {
  const fmt = (n, digits = 0) =>
    Number.isFinite(n)
      ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
      : '–';
  const cores = availableParallelism();
  const lines = [
    `Run of ${new Date().toISOString().slice(0, 10)}: ${ROUNDS} rounds × ${DURATION} s per scenario and server (after a ${WARMUP} s warm-up), ` +
      `${CONNECTIONS} connections, whole run ${Math.round(elapsed)} s. Machine: ${cores} cores (${cpus()[0]?.model?.trim()}), ` +
      `${Math.round(totalmem() / 2 ** 30)} GiB, shared. Node ${process.versions.node}, PostgreSQL ${postgresVersion} on loopback (default settings).`,
    '',
    '| scenario | app processes | req/s (median) | min–max | × 1 process | app CPU µs/request | PostgreSQL backends µs/request | PostgreSQL background µs/request | load generator µs/request | rest of the machine µs/request | machine busy | I/O wait | CPU ceiling req/s | PostgreSQL ceiling req/s | p99 latency ms | non-2xx |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const scenario of SCENARIOS) {
    for (const count of PROCESSES) {
      const mine = samples.filter((s) => s.scenario === scenario.id && s.processes === count);
      const first = (round) =>
        samples.find((s) => s.round === round && s.scenario === scenario.id && s.processes === PROCESSES[0]);
      const m = (key) => median(mine.map((s) => s[key]));
      const rates = mine.map((s) => s.reqPerSec);
      const ceiling = (cores * 1e6) / (m('app') + m('postgres') + m('background') + m('loader'));
      const database = (cores * 1e6) / (m('postgres') + m('background'));
      lines.push(
        `| ${scenario.label} | ${count} | ${fmt(m('reqPerSec'))} | ${fmt(Math.min(...rates))}–${fmt(Math.max(...rates))} | ` +
          `${fmt(median(mine.map((s) => s.reqPerSec / first(s.round).reqPerSec)), 2)} | ${fmt(m('app'))} | ${fmt(m('postgres'))} | ` +
          `${fmt(m('background'))} | ${fmt(m('loader'))} | ${fmt(m('other'))} | ${fmt(m('busyShare') * 100)} % | ${fmt(m('iowaitShare') * 100)} % | ` +
          `${fmt(ceiling)} | ${fmt(database)} | ${fmt(m('p99'))} | ${m('non2xx') || 0} |`,
      );
    }
  }
  lines.push(
    '',
    `× 1 process: median over the rounds of req/s divided by that of ${PROCESSES[0]} process${PROCESSES[0] > 1 ? 'es' : ''} in the same round. ` +
      'CPU per request: the CPU time /proc shows over the measured run, divided by the requests autocannon completed; ' +
      "app: the cluster primary and its workers; PostgreSQL backends: the server's connections (found by their application_name); " +
      'PostgreSQL background: WAL writer, checkpointer, background writer, autovacuum (shared with any other database ' +
      'of the server); rest of the machine: busy time of /proc/stat none of these accounts for (other work on the shared ' +
      `machine). CPU ceiling: ${cores} cores divided by the CPU a request costs app, PostgreSQL and the load generator ` +
      'together; PostgreSQL ceiling: the same for PostgreSQL alone, what these cores would serve with the app and the load elsewhere.',
  );
  return lines.join('\n');
}
