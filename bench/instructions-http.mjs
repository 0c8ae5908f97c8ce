// `npm run bench:instructions-http`: user-space instructions per HTTP request
// of each contender's server (the servers of `npm run bench`), counted by
// valgrind's callgrind, as bench:instructions counts the in-process scenarios.
//
// Each contender's server runs under callgrind (Node with --single-threaded:
// see instructions.mjs) on a database of its own; autocannon, outside
// valgrind, sends it a fixed number of requests over 8 connections, each with
// its own session (none for a new session), then the server is stopped and
// callgrind's total read.  Run at a low and a high request count, the
// difference of the totals over the difference of requests is what one request
// costs the server, HTTP parsing and Koa or Express included; start-up, the 8
// sessions made first and warm-up cancel out.  What it leaves out is the
// kernel (the socket writes) and PostgreSQL: it says how much work each server
// does, not how long it takes.
// The low count is well past start-up: between 400 and 2,400 requests V8 was
// still compiling the hot paths (on the main thread, with --single-threaded),
// and every figure came out some 15 % above that of 2,400 to 6,400 requests.
// Environment: INSTR_CONTENDERS (ids, comma-separated), INSTR_SCENARIOS (read,
// write, new, ignore), INSTR_LOW (2400), INSTR_HIGH (6400), INSTR_JOBS (2),
// BENCH_PG_URL.
import { spawn } from 'node:child_process';
import autocannon from 'autocannon';
import { CALLGRIND, callgrindTotal, countJobs, requireValgrind } from './callgrind.mjs';
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
const LOW = Number(process.env.INSTR_LOW ?? 2400);
const HIGH = Number(process.env.INSTR_HIGH ?? 6400);
const JOBS = Number(process.env.INSTR_JOBS ?? 2);
const CONNECTIONS = 8;
if (!(Number.isInteger(LOW) && Number.isInteger(HIGH) && HIGH > LOW))
  throw new Error(`INSTR_LOW (${LOW}) and INSTR_HIGH (${HIGH}): whole numbers, HIGH above LOW`);
requireValgrind('bench:instructions-http');

/** Starts `contender` under callgrind on `port`; resolves once it prints "ready". */
function startServer(contender, port, dbUrl) {
  const child = spawn(
    'valgrind',
    [...CALLGRIND, process.execPath, '--single-threaded', new URL(contender.file, import.meta.url).pathname],
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
  /** Stops the server; resolves with the instructions callgrind counted. */
  const stop = async () => {
    child.kill('SIGTERM');
    const code = await exited;
    const total = callgrindTotal(stderr);
    if (code !== 0 || total === undefined)
      throw new Error(`${contender.id} exited with ${code}:\n${stderr.slice(-2000)}`);
    return total;
  };
  return { ready, stop, kill: () => child.kill('SIGKILL') };
}

/** One server run: the sessions, `requests` requests of `scenario`, and the instructions counted over all of it. */
async function count(contender, scenario, requests, slot, dbUrl) {
  const port = 4300 + slot;
  const url = `http://127.0.0.1:${port}`;
  const server = startServer(contender, port, dbUrl);
  try {
    await server.ready;
    const cookies = [];
    if (!scenario.noCookie)
      for (let i = 0; i < CONNECTIONS; i++)
        // The floor has no session: a cookie of the library's size names its row (as in run.mjs).
        cookies.push(contender.id.startsWith('floor') ? `session=${'x'.repeat(60)}${i}` : await createSession(url));
    let next = 0;
    const result = await autocannon({
      url: url + scenario.path,
      connections: CONNECTIONS,
      amount: requests,
      timeout: 60,
      setupClient: cookies.length
        ? (client) => client.setHeaders({ cookie: cookies[next++ % cookies.length] })
        : undefined,
    });
    if (result.non2xx || result.errors || result.timeouts || result.requests.total !== requests)
      throw new Error(
        `${contender.id} ${scenario.id}: ${result.requests.total} of ${requests} requests, ${result.non2xx} non-2xx, ` +
          `${result.errors} errors, ${result.timeouts} timeouts`,
      );
    return await server.stop();
  } catch (error) {
    server.kill();
    throw error;
  }
}

const jobs = contenders.flatMap((contender) =>
  scenarios.flatMap((scenario) =>
    [LOW, HIGH].map((requests) => ({
      key: `${contender.id}/${scenario.id}@${requests}`,
      label: `${contender.id} ${scenario.id}, ${requests} requests`,
      contender,
      scenario,
      requests,
    })),
  ),
);
// Each slot's server listens on a port of its own.
const totals = await countJobs(jobs, JOBS, (job, dbUrl, slot) =>
  count(job.contender, job.scenario, job.requests, slot, dbUrl),
);

const perRequest = (contender, scenario) =>
  (totals.get(`${contender.id}/${scenario.id}@${HIGH}`) - totals.get(`${contender.id}/${scenario.id}@${LOW}`)) /
  (HIGH - LOW);
console.log(
  `Server instructions per HTTP request (callgrind, user space, Node --single-threaded), 8 connections: ` +
    `(run of ${HIGH} − run of ${LOW}) ÷ ${HIGH - LOW} requests; thousands, and theirs ÷ koa-mikro-session's`,
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
