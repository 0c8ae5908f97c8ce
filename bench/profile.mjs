// `npm run bench:profile [scenario ...]`: runs this library's bench server under
// Node's --cpu-prof, loads one scenario at a time with autocannon (in its own
// process, 8 connections, each with its own session), and prints where the
// server's CPU went: self time by package and the top functions, self and
// inclusive.  Scenarios: read, write, new, ignore (default: read write).
// The .cpuprofile files stay in bench/profiles/ for Chrome DevTools.
// Environment: PROFILE_DURATION (8 s), PROFILE_MODE (the server's MODE, default), PROFILE_SERVER (server-ours.mjs;
// server-floor.mjs with PROFILE_MODE=design profiles the design floor the same way), BENCH_PG_URL.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';

const SCENARIOS = { read: '/read', write: '/write', new: '/new', ignore: '/ignore' };
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : ['read', 'write'];
const DURATION = Number(process.env.PROFILE_DURATION ?? 8);
const here = new URL('.', import.meta.url);
const PORT = 4180;
const DIST = new URL('../dist/', here).href;

for (const name of wanted) {
  if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name}: one of ${Object.keys(SCENARIOS).join(', ')}`);
  const dir = new URL(`profiles/${name}/`, here).pathname;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  let cpuUsPerRequest = NaN;
  const server = spawn(
    process.execPath,
    ['--cpu-prof', `--cpu-prof-dir=${dir}`, new URL(process.env.PROFILE_SERVER ?? 'server-ours.mjs', here).pathname],
    {
      env: { ...process.env, MODE: process.env.PROFILE_MODE ?? 'default', PORT: String(PORT) },
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    },
  );
  try {
    await new Promise((resolve, reject) => {
      server.stdout.on('data', (chunk) => String(chunk).includes('ready') && resolve());
      server.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    const url = `http://127.0.0.1:${PORT}`;
    const cookies = [];
    for (let i = 0; i < 8; i++) {
      const response = await fetch(`${url}/write`);
      await response.arrayBuffer();
      cookies.push(
        response.headers
          .getSetCookie()
          .map((line) => line.split(';')[0])
          .join('; '),
      );
    }
    const result = await load({
      url,
      path: SCENARIOS[name],
      cookies: name === 'new' ? null : cookies,
      connections: 8,
      duration: DURATION,
      warmup: 2,
    });
    cpuUsPerRequest = result.cpuUsPerRequest;
    console.log(
      `\n== ${name}: ${Math.round(result.reqPerSec)} req/s, ${result.statementsPerRequest.toFixed(2)} statements and ${result.cpuUsPerRequest.toFixed(0)} µs CPU per request (the profiler adds some)`,
    );
  } finally {
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await Promise.race([exited, delay(10_000).then(() => server.kill('SIGKILL'))]);
  }
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no profile written in ${dir}`);
  report(JSON.parse(readFileSync(dir + file, 'utf8')), cpuUsPerRequest);
}

function load(options) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [new URL('load.mjs', here).pathname], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    child.once('message', (answer) => {
      child.disconnect();
      if (answer.ok) resolve(answer.result);
      else reject(new Error(answer.error));
    });
    child.once('exit', (code) => reject(new Error(`load exited with ${code}`)));
    child.send(options);
  });
}

/** Which package (or part of Node) a profiled function belongs to. */
function owner(url) {
  if (!url) return '(native / V8)';
  if (url.startsWith(DIST)) return 'koa-mikro-session (dist)';
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (match) return match[1];
  if (url.startsWith('node:')) return 'node core';
  return url.replace(/^file:\/\//, '').replace(/^.*\/bench\//, 'bench/');
}

/** `cpu`: the server's CPU µs per request over the run, which the busy samples share out. */
function report(profile, cpu) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const total = profile.samples.length;
  const idle = new Set(['(idle)', '(program)', '(garbage collector)']);
  const busy = profile.nodes.filter((n) => !idle.has(n.callFrame.functionName)).reduce((sum, n) => sum + n.hitCount, 0);
  const gc = profile.nodes
    .filter((n) => n.callFrame.functionName === '(garbage collector)')
    .reduce((sum, n) => sum + n.hitCount, 0);
  // Share of the busy samples, and that share of the CPU per request (µs), to set two servers' profiles side by side.
  const pct = (hits) =>
    `${((100 * hits) / busy).toFixed(1).padStart(5)} % ${((hits / busy) * cpu).toFixed(1).padStart(6)} µs`;
  const key = ({ functionName, url, lineNumber }) => `${functionName || '(anonymous)'} ${owner(url)}:${lineNumber + 1}`;

  const packages = new Map();
  const self = new Map();
  for (const node of profile.nodes) {
    if (idle.has(node.callFrame.functionName)) continue;
    packages.set(owner(node.callFrame.url), (packages.get(owner(node.callFrame.url)) ?? 0) + node.hitCount);
    self.set(key(node.callFrame), (self.get(key(node.callFrame)) ?? 0) + node.hitCount);
  }
  // Inclusive time: a node's hits plus its subtree's, counted once per function on a stack (recursion).
  const inclusive = new Map();
  const walk = (node, onStack) => {
    let hits = node.hitCount;
    const k = key(node.callFrame);
    const fresh = !onStack.has(k);
    if (fresh) onStack.add(k);
    for (const child of node.children ?? []) hits += walk(byId.get(child), onStack);
    if (fresh) {
      onStack.delete(k);
      if (!idle.has(node.callFrame.functionName)) inclusive.set(k, (inclusive.get(k) ?? 0) + hits);
    }
    return hits;
  };
  walk(profile.nodes[0], new Set());

  console.log(
    `${total} samples, ${busy} busy (the rest idle, waiting on the database), garbage collection ${pct(gc)} of busy`,
  );
  console.log('-- self time by package (share of busy samples)');
  for (const [name, hits] of [...packages].sort((a, b) => b[1] - a[1]).slice(0, 12))
    console.log(`${pct(hits)}  ${name}`);
  console.log('-- top functions, self time');
  for (const [name, hits] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`${pct(hits)}  ${name}`);
  console.log('-- this library and MikroORM, inclusive time');
  const interesting = [...inclusive].filter(([name]) => /koa-mikro-session|@mikro-orm/.test(name));
  for (const [name, hits] of interesting.sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${pct(hits)}  ${name}`);
}
