// `npm run bench:instructions-http`: user-space instructions per HTTP request
// of each contender's server (the servers of `npm run bench`), counted by
// valgrind's callgrind, as bench:instructions counts the in-process scenarios.
//
// Each contender's server runs under callgrind (Node with --single-threaded:
// see instructions.mjs) on a database of its own, with callgrind's counting
// off.  autocannon, outside valgrind, sends it INSTR_WARMUP requests over 8
// connections, each with its own session (none for a new session); then
// counting is switched on (callgrind_control), INSTR_REQUESTS more requests
// are sent, and the count is dumped: that count over INSTR_REQUESTS is what one
// request costs the server, HTTP parsing and Koa or Express included.  What it
// leaves out is the kernel (the socket writes) and PostgreSQL: it says how
// much work each server does, not how long it takes.
// Why a long warm-up: V8 goes on optimizing the hot paths for some 20,000
// requests (node --trace-opt: 600 functions compiled in the first 2,000
// requests, 140 in the next 4,000, then a handful per 2,000).  A first version
// counted requests 2,400 to 6,400, and a third of what it counted was V8's
// optimizing compiler at work, a cost that a server running for hours does
// not pay per request.  What compiling is left in the window comes in lumps
// (one TurboFan compilation: 5 to 30 million instructions), so it is shown
// apart.  Node runs with --no-memory-reducer: V8's memory reducer starts a
// full garbage collection when the allocation rate per millisecond drops, as
// it does when counting starts and the server runs five times slower.
// Environment: INSTR_NODE_FLAGS (--single-threaded --no-memory-reducer),
// INSTR_CONTENDERS (ids, comma-separated), INSTR_SCENARIOS (read,
// write, new, ignore), INSTR_WARMUP (24000), INSTR_REQUESTS (4000), INSTR_JOBS
// (2), INSTR_KEEP (a folder for callgrind's per-function output; see
// callgrind.mjs), INSTR_PORT (4300: the first server's port), BENCH_PG_URL.
import { spawn } from 'node:child_process';
import autocannon from 'autocannon';
import { callgrindArgs, control, countJobs, requireValgrind } from './callgrind.mjs';
import { CONTENDER_SERVERS, createSession } from './runner.mjs';

// The peers of npm run bench that session libraries are compared with, and the design floor.
const ALL_CONTENDERS = ['ours', 'floor-design', 'koa-session', 'koa-session-mikro', 'express'].map((id) =>
  CONTENDER_SERVERS.find((server) => server.id === id),
);
const ALL_SCENARIOS = [
  { id: 'ignore', path: '/ignore' },
  { id: 'read', path: '/read' },
  { id: 'write', path: '/write' },
  { id: 'new', path: '/new', noCookie: true },
];
const pick = (all, wanted) => {
  if (!wanted) return all;
  const ids = wanted.split(',');
  const unknown = ids.filter((id) => !all.some((item) => item.id === id));
  if (unknown.length) throw new Error(`no ${unknown.join(', ')}: one of ${all.map((item) => item.id).join(', ')}`);
  return all.filter((item) => ids.includes(item.id));
};
const contenders = pick(ALL_CONTENDERS, process.env.INSTR_CONTENDERS);
const scenarios = pick(ALL_SCENARIOS, process.env.INSTR_SCENARIOS ?? 'read,write,new');
const WARMUP = Number(process.env.INSTR_WARMUP ?? 24000);
const REQUESTS = Number(process.env.INSTR_REQUESTS ?? 4000);
const JOBS = Number(process.env.INSTR_JOBS ?? 2);
const NODE_FLAGS = (process.env.INSTR_NODE_FLAGS ?? '--single-threaded --no-memory-reducer').split(' ').filter(Boolean);
const CONNECTIONS = 8;
if (!(Number.isInteger(WARMUP) && WARMUP >= 0 && Number.isInteger(REQUESTS) && REQUESTS > 0))
  throw new Error(`INSTR_WARMUP (${WARMUP}) and INSTR_REQUESTS (${REQUESTS}): whole numbers, REQUESTS above 0`);
requireValgrind('bench:instructions-http');

/** Starts `contender` under callgrind, counting off, on `port`; resolves once it prints "ready". */
function startServer(contender, port, dbUrl, out) {
  const child = spawn(
    'valgrind',
    [...callgrindArgs(out), process.execPath, ...NODE_FLAGS, new URL(contender.file, import.meta.url).pathname],
    {
      env: { ...process.env, ...contender.env, PORT: String(port), BENCH_PG_URL: dbUrl },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${contender.id} did not start in 240 s`)), 240_000);
    child.stdout.on('data', (chunk) => {
      if (String(chunk).includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${contender.id} exited with ${code} before it was ready:\n${stderr.slice(-2000)}`));
    });
  });
  const stop = async () => {
    child.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`${contender.id} exited with ${code}:\n${stderr.slice(-2000)}`);
  };
  return { ready, control: (command) => control(child.pid, command), stop, kill: () => child.kill('SIGKILL') };
}

/** `amount` requests of `scenario` over 8 connections, each with one of `cookies` (if any). */
async function load(url, scenario, cookies, amount) {
  let next = 0;
  const result = await autocannon({
    url: url + scenario.path,
    connections: CONNECTIONS,
    amount,
    timeout: 60,
    setupClient: cookies.length
      ? (client) => client.setHeaders({ cookie: cookies[next++ % cookies.length] })
      : undefined,
  });
  if (result.non2xx || result.errors || result.timeouts || result.requests.total !== amount)
    throw new Error(
      `${scenario.id}: ${result.requests.total} of ${amount} requests, ${result.non2xx} non-2xx, ` +
        `${result.errors} errors, ${result.timeouts} timeouts`,
    );
}

/** Runs the server of `contender` under callgrind; REQUESTS requests of `scenario`, after the warm-up, are dumped to `${out}.1`. */
async function count(contender, scenario, slot, dbUrl, out) {
  const port = Number(process.env.INSTR_PORT ?? 4300) + slot;
  const url = `http://127.0.0.1:${port}`;
  const server = startServer(contender, port, dbUrl, out);
  try {
    await server.ready;
    const cookies = [];
    if (!scenario.noCookie)
      for (let i = 0; i < CONNECTIONS; i++)
        // The floor has no session: a cookie of the library's size names its row (as in run.mjs).
        cookies.push(contender.id.startsWith('floor') ? `session=${'x'.repeat(60)}${i}` : await createSession(url));
    await load(url, scenario, cookies, WARMUP);
    server.control('--instr=on');
    await load(url, scenario, cookies, REQUESTS);
    server.control('--dump');
    await server.stop();
  } catch (error) {
    server.kill();
    throw error;
  }
}

const jobs = contenders.flatMap((contender) =>
  scenarios.map((scenario) => ({
    key: `${contender.id}/${scenario.id}`,
    label: `${contender.id} ${scenario.id}`,
    contender,
    scenario,
  })),
);
// Each slot's server listens on a port of its own.
const windows = await countJobs(jobs, JOBS, (job, dbUrl, slot, out) =>
  count(job.contender, job.scenario, slot, dbUrl, out),
);

const windowOf = (contender, scenario) => windows.get(`${contender.id}/${scenario.id}`);
const perRequest = (contender, scenario) => {
  const { total, compiling } = windowOf(contender, scenario);
  return (total - compiling) / REQUESTS;
};
console.log(
  `Server instructions per HTTP request (callgrind, user space, Node ${NODE_FLAGS.join(' ')}), 8 connections, ` +
    `${REQUESTS} requests counted after ${WARMUP} uncounted, V8's compiling left out (below); ` +
    `thousands, and theirs ÷ koa-mikro-session's`,
);
console.log(`| scenario | ${contenders.map((c) => c.label).join(' | ')} |`);
console.log(`|---|${contenders.map(() => '---:').join('|')}|`);
const ours = contenders.find((c) => c.id === 'ours');
for (const scenario of scenarios) {
  const cells = contenders.map((contender) => {
    const value = perRequest(contender, scenario);
    const ratio = ours && contender !== ours ? ` (${(value / perRequest(ours, scenario)).toFixed(2)})` : '';
    return `${(value / 1000).toFixed(1)}${ratio}`;
  });
  console.log(`| ${scenario.id} | ${cells.join(' | ')} |`);
}
const compiled = (contender, scenario) => (windowOf(contender, scenario).compiling / REQUESTS / 1000).toFixed(1);
console.log(
  `V8's compiling in the same windows, thousands per request: ` +
    scenarios
      .map((scenario) => `${scenario.id} ${contenders.map((c) => `${c.id} ${compiled(c, scenario)}`).join(', ')}`)
      .join('; '),
);
