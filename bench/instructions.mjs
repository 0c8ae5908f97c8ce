// `npm run bench:instructions`: machine instructions per request, counted by
// valgrind's callgrind, for the in-process scenarios of cpu.mjs.
//
// Why: on this shared 2-core machine, CPU time per request moves by ±10–20 %
// from one run to the next, so a change of a few µs cannot be seen in it.
// Callgrind counts the instructions the Node process executes in user space,
// whatever else the machine does: the same build and scenario repeats its
// count per request to within about 1 % (457.0–462.1 k for a new session).
// What it leaves out: the kernel (socket writes), PostgreSQL's own work, and
// what an instruction costs (cache misses, stalls), so it says how much work
// each side does in the app process, not how long it takes; the HTTP figures
// stay `npm run bench`'s.
//
// How: each scenario runs alone under callgrind twice, with BENCH_REQUESTS
// low and high (cpu.mjs runs 1.5 × that: a warm-up of half, then one
// measured run).  The difference of the two totals, divided by the difference
// of requests, is what a request costs; start-up, schema and JIT warm-up
// cancel out.  Each run takes some 40–120 s under valgrind; JOBS run at once
// (what runs beside them slows them and hardly changes the count), each on a
// database of its own, as cpu.mjs makes its tables anew.
// Environment: INSTR_SCENARIOS (cpu.mjs scenario names, comma-separated),
// INSTR_LOW (400), INSTR_HIGH (4000), INSTR_JOBS (2), INSTR_NODE_FLAGS (node's
// flags, default --single-threaded), BENCH_LIBRARY (another built dist/
// folder), BENCH_PG_URL.
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { CALLGRIND, callgrindTotal, countJobs, requireValgrind } from './callgrind.mjs';

const DEFAULT_SCENARIOS = [
  'read a value',
  'write a value',
  'new session',
  'read with idle extension due',
  'design floor: read a value',
  'design floor: write a value',
  'design floor: new session',
  'koa-session + pg: read a value',
  'koa-session + pg: write a value',
  'koa-session + pg: new session',
];
const scenarios = process.env.INSTR_SCENARIOS?.split(',') ?? DEFAULT_SCENARIOS;
const LOW = Number(process.env.INSTR_LOW ?? 400);
const HIGH = Number(process.env.INSTR_HIGH ?? 4000);
// V8's background threads (compilers, concurrent marking) make the count depend on when they run:
// --single-threaded does that work on the main thread, and the count repeats to about 1 % instead of 2–3 %.
const NODE_FLAGS = (process.env.INSTR_NODE_FLAGS ?? '--single-threaded').split(' ').filter(Boolean);
const JOBS = Number(process.env.INSTR_JOBS ?? Math.min(2, availableParallelism()));
if (!(Number.isInteger(LOW) && Number.isInteger(HIGH) && LOW % 8 === 0 && HIGH % 8 === 0 && HIGH > LOW))
  throw new Error(`INSTR_LOW (${LOW}) and INSTR_HIGH (${HIGH}): multiples of 8, HIGH above LOW`);

requireValgrind('bench:instructions');

const cpuScript = new URL('cpu.mjs', import.meta.url).pathname;

/** The instructions callgrind counted over one whole run of cpu.mjs with `requests`, on database `url`. */
function count(scenario, requests, url) {
  return new Promise((resolve, reject) => {
    const child = spawn('valgrind', [...CALLGRIND, process.execPath, ...NODE_FLAGS, cpuScript], {
      env: {
        ...process.env,
        BENCH_PG_URL: url,
        BENCH_SCENARIOS: scenario,
        BENCH_REQUESTS: String(requests),
        BENCH_RUNS: '1',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      const total = callgrindTotal(stderr);
      if (code !== 0 || total === undefined)
        reject(new Error(`${scenario} (${requests} requests) exited with ${code}:\n${stderr.slice(-2000)}`));
      else resolve(total);
    });
  });
}

const jobs = scenarios.flatMap((scenario) =>
  [LOW, HIGH].map((requests) => ({
    key: `${scenario}@${requests}`,
    label: `${scenario}, ${requests} requests`,
    scenario,
    requests,
  })),
);
const totals = await countJobs(jobs, JOBS, (job, url) => count(job.scenario, job.requests, url));

// cpu.mjs runs a warm-up of half the requests, then the measured run.
const requests = 1.5 * (HIGH - LOW);
console.log(
  `Instructions per request (callgrind, user space of the Node process), in-process, 8 concurrent: (runs of ${HIGH} − runs of ${LOW}) ÷ ${requests} requests (library: ${process.env.BENCH_LIBRARY ?? 'dist/'})`,
);
for (const scenario of scenarios) {
  const perRequest = (totals.get(`${scenario}@${HIGH}`) - totals.get(`${scenario}@${LOW}`)) / requests;
  console.log(`${scenario.padEnd(32)} ${(perRequest / 1000).toFixed(1).padStart(7)} k`);
}
