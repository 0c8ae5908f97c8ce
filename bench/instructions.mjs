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
// How: each scenario runs alone under callgrind (Node --single-threaded
// --no-memory-reducer, for the reasons given in instructions-http.mjs), with
// callgrind's counting off for cpu.mjs's warm-up of INSTR_WARMUP requests; then
// counting is switched on (callgrind_control) for one measured run of
// INSTR_REQUESTS, and dumped.  What V8 spent compiling in that window is
// left out and shown apart (see callgrind.mjs).  A run takes some 1–3
// minutes; JOBS run at once (what runs beside them slows them and hardly
// changes the count), each on a database of its own, as cpu.mjs makes its
// tables anew.
// Environment: INSTR_SCENARIOS (cpu.mjs scenario names, comma-separated),
// INSTR_WARMUP (24000), INSTR_REQUESTS (4000), INSTR_JOBS (2),
// INSTR_NODE_FLAGS (node's flags), INSTR_KEEP (a folder for callgrind's
// per-function output; see callgrind.mjs), BENCH_LIBRARY (another built dist/
// folder), BENCH_PG_URL.
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { callgrindArgs, control, countJobs, requireValgrind } from './callgrind.mjs';

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
const WARMUP = Number(process.env.INSTR_WARMUP ?? 24000);
const REQUESTS = Number(process.env.INSTR_REQUESTS ?? 4000);
// V8's background threads (compilers, concurrent marking) make the count depend on when they run:
// --single-threaded does that work on the main thread, and the count repeats to about 1 % instead of 2–3 %.
const NODE_FLAGS = (process.env.INSTR_NODE_FLAGS ?? '--single-threaded --no-memory-reducer').split(' ').filter(Boolean);
const JOBS = Number(process.env.INSTR_JOBS ?? Math.min(2, availableParallelism()));
if (!(Number.isInteger(WARMUP) && Number.isInteger(REQUESTS) && WARMUP % 8 === 0 && REQUESTS % 8 === 0 && REQUESTS > 0))
  throw new Error(`INSTR_WARMUP (${WARMUP}) and INSTR_REQUESTS (${REQUESTS}): multiples of 8, REQUESTS above 0`);

requireValgrind('bench:instructions');

const cpuScript = new URL('cpu.mjs', import.meta.url).pathname;

/** Runs `scenario` of cpu.mjs on database `url` under callgrind, which dumps the measured run to `${out}.1`. */
function count(scenario, url, out) {
  return new Promise((resolve, reject) => {
    const child = spawn('valgrind', [...callgrindArgs(out), process.execPath, ...NODE_FLAGS, cpuScript], {
      env: {
        ...process.env,
        BENCH_PG_URL: url,
        BENCH_SCENARIOS: scenario,
        BENCH_WARMUP: String(WARMUP),
        BENCH_REQUESTS: String(REQUESTS),
        BENCH_RUNS: '1',
        BENCH_PAUSE: '1',
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.stdout.on('data', (chunk) => {
      try {
        for (const word of String(chunk).split('\n')) {
          if (word === 'warm') control(child.pid, '--instr=on');
          else if (word === 'measured') control(child.pid, '--dump');
          else continue;
          child.stdin.write('go\n');
        }
      } catch (error) {
        child.kill('SIGKILL');
        reject(error);
      }
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`${scenario} exited with ${code}:\n${stderr.slice(-2000)}`));
      else resolve();
    });
  });
}

const jobs = scenarios.map((scenario) => ({ key: scenario, label: scenario, scenario }));
const windows = await countJobs(jobs, JOBS, (job, url, slot, out) => count(job.scenario, url, out));

console.log(
  `Instructions per request (callgrind, user space of the Node process, Node ${NODE_FLAGS.join(' ')}), ` +
    `in-process, 8 concurrent: ${REQUESTS} requests counted after ${WARMUP} uncounted, V8's compiling left out ` +
    `and shown after (library: ${process.env.BENCH_LIBRARY ?? 'dist/'})`,
);
for (const scenario of scenarios) {
  const { total, compiling } = windows.get(scenario);
  const perRequest = (total - compiling) / REQUESTS;
  const compiled = compiling / REQUESTS;
  console.log(
    `${scenario.padEnd(32)} ${(perRequest / 1000).toFixed(1).padStart(7)} k   compiling ${(compiled / 1000).toFixed(1)} k`,
  );
}
