// What the instruction counts (instructions.mjs, instructions-http.mjs) share:
// valgrind's command line, switching the count on and dumping it, reading a
// dumped window, and running the jobs a few at a time, each job slot on a
// scratch database of its own.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { PG_URL } from './common.mjs';
import { ensureDatabase } from './runner.mjs';

/**
 * Where callgrind writes its per-function output: nowhere, or the folder
 * $INSTR_KEEP as callgrind.out.<name>, for callgrind_annotate (where the
 * instructions went: V8's garbage collector and compilers, the HTTP parser,
 * the crypto library; JIT-compiled JavaScript shows as addresses).
 */
export function callgrindOut(name) {
  const keep = process.env.INSTR_KEEP;
  return keep ? join(resolve(keep), `callgrind.out.${fileName(name)}`) : undefined;
}

const fileName = (name) => name.replace(/[^\w.@-]+/g, '_');

/** valgrind's arguments before the program: callgrind, writing to `out`, counting off until control() turns it on. */
export function callgrindArgs(out) {
  return ['--tool=callgrind', `--callgrind-out-file=${out}`, '--instr-atstart=no'];
}

/** Exits with a message when valgrind is missing: nothing can be counted. */
export function requireValgrind(script) {
  if (!spawnSync('valgrind', ['--version']).error) return;
  console.error(`${script} needs valgrind (Debian: apt-get install valgrind); nothing was measured`);
  process.exit(1);
}

/** Tells callgrind in process `pid` to switch counting on (--instr=on) or to dump and zero its count (--dump). */
export function control(pid, command) {
  const result = spawnSync('callgrind_control', [command, String(pid)], { encoding: 'utf8' });
  if (result.status !== 0 || !/OK/.test(result.stdout))
    throw new Error(`callgrind_control ${command}: ${result.stdout}${result.stderr}`);
}

/** The instructions of a dump that callgrind wrote (callgrind_control --dump). */
function dumpedTotal(file) {
  const total = /^totals:\s*(\d+)/m.exec(readFileSync(file, 'utf8'));
  if (!total) throw new Error(`${file}: no totals line`);
  return Number(total[1]);
}

/**
 * V8 compiling: TurboFan and Turboshaft, Maglev, Sparkplug, Ignition's bytecode
 * generator and the assembler under them.  A server pays it while its hot paths
 * warm up, then less and less (a few functions per 2,000 requests after
 * 24,000), in lumps of 5 to 30 million instructions: kept apart, so that one
 * late compilation landing in a counted window does not read as the cost of a request.
 */
const COMPILING =
  /v8::internal::(compiler|maglev|baseline|interpreter|turboshaft)::|v8::internal::(Compiler|Assembler)::/;

/** Of a dump's instructions, those spent in V8's compilers (read with callgrind_annotate). */
function compilingTotal(file) {
  const annotated = spawnSync('callgrind_annotate', ['--threshold=100', file], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (annotated.status !== 0) throw new Error(`callgrind_annotate ${file}: ${annotated.stderr}`);
  let total = 0;
  for (const line of annotated.stdout.split('\n')) {
    const cost = /^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$/.exec(line);
    if (cost && COMPILING.test(cost[2])) total += Number(cost[1].replaceAll(',', ''));
  }
  return total;
}

/**
 * Runs `count(job, databaseUrl, slot, out)` for every job, `slots` at a time:
 * it runs the job's program under callgrind writing to `out` (callgrindArgs),
 * with one window dumped by callgrind_control (`${out}.1`).  Returns each
 * window's { total, compiling } instructions by `job.key`.  Each slot gets a
 * database of its own, dropped at the end: the programs counted make their
 * tables anew, and would drop each other's (or another run's).
 */
export async function countJobs(jobs, slots, count) {
  const scratch = mkdtempSync(join(tmpdir(), 'callgrind-'));
  const urls = [];
  const windows = new Map();
  const started = Date.now();
  let next = 0;
  const worker = async (slot) => {
    const url = new URL(PG_URL);
    url.pathname = `/${url.pathname.slice(1)}_instructions_${process.pid}_${slot}`;
    await ensureDatabase(url.href);
    urls.push(url);
    while (next < jobs.length) {
      const job = jobs[next++];
      const out = callgrindOut(job.key) ?? join(scratch, fileName(job.key));
      await count(job, url.href, slot, out);
      const window = { total: dumpedTotal(`${out}.1`), compiling: compilingTotal(`${out}.1`) };
      windows.set(job.key, window);
      const seconds = Math.round((Date.now() - started) / 1000);
      console.error(
        `  ${job.label}: ${window.total.toLocaleString('en')} instructions, ` +
          `${window.compiling.toLocaleString('en')} of them compiling (${seconds} s)`,
      );
    }
  };
  try {
    await Promise.all(Array.from({ length: slots }, (_, slot) => worker(slot)));
  } finally {
    for (const url of urls) await dropDatabase(url);
    rmSync(scratch, { recursive: true, force: true });
  }
  return windows;
}

async function dropDatabase(url) {
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.href });
  await client.connect();
  try {
    await client.query(`drop database if exists "${url.pathname.slice(1)}" with (force)`);
  } finally {
    await client.end();
  }
}
