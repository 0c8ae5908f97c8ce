// What the benchmark runners (run.mjs, processes.mjs, instructions-http.mjs)
// share: the contender servers; their child processes, stopped whatever way
// the run ends; the bench database; the one load process (load.mjs); a session
// cookie from a server; medians; and the block of BENCHMARKS.md each one
// rewrites.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';

const here = new URL('.', import.meta.url);

/** The servers npm run bench runs (bench/server-*.mjs), by id: the floors, the library's modes and its peers. */
export const CONTENDER_SERVERS = [
  { id: 'floor', label: 'bare Koa + MikroORM fork (floor)', file: 'server-floor.mjs', env: { MODE: 'bare' } },
  {
    id: 'floor-min',
    label: 'floor + the minimum statements as fixed SQL',
    file: 'server-floor.mjs',
    env: { MODE: 'minimum' },
  },
  {
    id: 'floor-design',
    label: "floor + what this design can't skip",
    file: 'server-floor.mjs',
    env: { MODE: 'design' },
  },
  { id: 'ours', label: 'koa-mikro-session', file: 'server-ours.mjs', env: { MODE: 'default' } },
  { id: 'ours-lazy', label: 'koa-mikro-session lazy: true', file: 'server-ours.mjs', env: { MODE: 'lazy' } },
  {
    id: 'ours-idle-not-due',
    label: 'koa-mikro-session IdleTimeout',
    file: 'server-ours.mjs',
    env: { MODE: 'idle-not-due' },
  },
  { id: 'ours-idle-due', label: 'koa-mikro-session IdleTimeout', file: 'server-ours.mjs', env: { MODE: 'idle-due' } },
  { id: 'koa-session', label: 'koa-session + pg store', file: 'server-koa-session.mjs' },
  {
    id: 'koa-session-mikro',
    label: 'koa-session + MikroORM store (RequestContext)',
    file: 'server-koa-session-mikro.mjs',
  },
  { id: 'express', label: 'express-session + connect-pg-simple', file: 'server-express.mjs' },
];

/**
 * Tracks the run's child processes and stops them on exit, on a signal and at
 * the deadline. `stopping` is set once the run winds down: a child dying then
 * is expected, not an error.
 */
export function supervise(name, deadlineMs) {
  const children = new Set();
  const state = { stopping: false };
  const stopAll = (signal = 'SIGTERM') => {
    for (const child of children) {
      try {
        child.kill(signal);
      } catch {}
    }
  };
  process.on('exit', () => stopAll('SIGKILL'));
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      state.stopping = true;
      console.error(`\n${signal}: stopping ${children.size} child processes`);
      stopAll();
      setTimeout(() => process.exit(130), 1500);
    });
  }
  setTimeout(() => {
    console.error(`${name}: deadline reached, stopping`);
    stopAll();
    process.exit(1);
  }, deadlineMs).unref();
  return {
    get stopping() {
      return state.stopping;
    },
    track(child) {
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    },
    /** Ends every child: SIGTERM, then SIGKILL for one still running after `graceMs`. */
    async stop(graceMs) {
      state.stopping = true;
      stopAll();
      await Promise.all(
        [...children].map(
          (child) =>
            new Promise((resolve) => {
              child.once('exit', resolve);
              setTimeout(() => {
                child.kill('SIGKILL');
                resolve();
              }, graceMs).unref();
            }),
        ),
      );
    },
  };
}

/**
 * Starts a server script (`args` for node) that prints a line with "ready"
 * once it listens; resolves with the child and that output.
 */
export function startChild(supervisor, { args, env, label, timeoutMs }) {
  const child = supervisor.track(
    spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] }),
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} did not start in ${timeoutMs / 1000} s`)), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!supervisor.stopping) reject(new Error(`${label} exited with ${code} before it was ready`));
    });
    child.stdout.on('data', (chunk) => {
      const output = String(chunk);
      if (output.includes('ready')) {
        clearTimeout(timer);
        resolve({ child, output });
      }
    });
  });
}

/** Creates the database of `url` when it is missing; returns the server's version. */
export async function ensureDatabase(url) {
  const admin = new URL(url);
  const name = admin.pathname.slice(1);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.href });
  await client.connect();
  try {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (!rowCount) await client.query(`create database "${name.replace(/"/g, '""')}"`);
    return (await client.query('show server_version')).rows[0].server_version.split(' ')[0];
  } finally {
    await client.end();
  }
}

/** The one load process of the run (load.mjs), started on first use; each call is one measurement. */
export function loadGenerator(supervisor) {
  let loader;
  return {
    get pid() {
      return loader?.pid;
    },
    start() {
      loader ??= supervisor.track(
        spawn(process.execPath, [new URL('load.mjs', here).pathname], {
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        }),
      );
      return loader;
    },
    run(options) {
      const child = this.start();
      return new Promise((resolve, reject) => {
        const exited = (code) => {
          if (!supervisor.stopping) reject(new Error(`load process exited with ${code}`));
        };
        child.once('exit', exited);
        child.once('message', (answer) => {
          child.off('exit', exited);
          if (answer.ok) resolve(answer.result);
          else reject(new Error(`load process: ${answer.error}`));
        });
        child.send(options);
      });
    },
  };
}

/** A new session on the server at `url`: one GET /write without a cookie; the Cookie header to send back. */
export async function createSession(url) {
  const response = await fetch(`${url}/write`);
  await response.arrayBuffer();
  return response.headers
    .getSetCookie()
    .map((line) => line.split(';')[0])
    .join('; ');
}

export function median(values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (!sorted.length) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Rewrites the block between <!-- bench:<block>:start --> and <!-- bench:<block>:end --> of BENCHMARKS.md. */
export function updateBenchmarks(block, report) {
  const file = new URL('../BENCHMARKS.md', here);
  const text = readFileSync(file, 'utf8');
  const start = `<!-- bench:${block}:start -->`;
  const end = `<!-- bench:${block}:end -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < 0) {
    console.warn(`BENCHMARKS.md has no bench:${block} markers; results not written there`);
    return;
  }
  writeFileSync(file, text.slice(0, i + start.length) + '\n' + report + '\n' + text.slice(j));
}
