// What the instruction counts (instructions.mjs, instructions-http.mjs) share:
// valgrind's command line, reading callgrind's total, and running the jobs a
// few at a time, each job slot on a scratch database of its own.
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { PG_URL } from './common.mjs';
import { ensureDatabase } from './runner.mjs';

/** valgrind's arguments before the program: callgrind, whose per-function output nobody reads. */
export const CALLGRIND = ['--tool=callgrind', '--callgrind-out-file=/dev/null'];

/** Exits with a message when valgrind is missing: nothing can be counted. */
export function requireValgrind(script) {
  if (!spawnSync('valgrind', ['--version']).error) return;
  console.error(`${script} needs valgrind (Debian: apt-get install valgrind); nothing was measured`);
  process.exit(1);
}

/** The instructions callgrind reports on stderr when the program ends, or undefined. */
export function callgrindTotal(stderr) {
  const total = /Collected\s*:\s*(\d+)/.exec(stderr);
  return total ? Number(total[1]) : undefined;
}

/**
 * Runs `count(job, databaseUrl, slot)` for every job, `slots` at a time, and returns
 * the totals by `job.key`.  Each slot gets a database of its own, dropped at
 * the end: the programs counted make their tables anew, and would drop each
 * other's (or another run's).
 */
export async function countJobs(jobs, slots, count) {
  const urls = [];
  const totals = new Map();
  const started = Date.now();
  let next = 0;
  const worker = async (slot) => {
    const url = new URL(PG_URL);
    url.pathname = `/${url.pathname.slice(1)}_instructions_${process.pid}_${slot}`;
    await ensureDatabase(url.href);
    urls.push(url);
    while (next < jobs.length) {
      const job = jobs[next++];
      const total = await count(job, url.href, slot);
      totals.set(job.key, total);
      const seconds = Math.round((Date.now() - started) / 1000);
      console.error(`  ${job.label}: ${total.toLocaleString('en')} instructions (${seconds} s)`);
    }
  };
  try {
    await Promise.all(Array.from({ length: slots }, (_, slot) => worker(slot)));
  } finally {
    for (const url of urls) await dropDatabase(url);
  }
  return totals;
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
