// The load generator, in its own process: autocannon against one contender and
// one route, a warm-up, then the measured run between two /__stats snapshots.
// Input: a JSON argument { url, path, cookies, connections, duration, warmup }.
// `cookies`: one Cookie header per connection (null: no cookie, a new session per request).
// Output: one JSON line on stdout.
import autocannon from 'autocannon';

const { url, path, cookies, connections, duration, warmup } = JSON.parse(process.argv[2]);

function run(seconds) {
  let next = 0;
  return autocannon({
    url: url + path,
    connections,
    duration: seconds,
    // Each connection (autocannon client) gets its own session cookie.
    setupClient: cookies ? (client) => client.setHeaders({ cookie: cookies[next++ % cookies.length] }) : undefined,
  });
}

async function snapshot() {
  const response = await fetch(`${url}/__stats`);
  return response.json();
}

if (warmup > 0) await run(warmup);
const before = await snapshot();
const result = await run(duration);
const after = await snapshot();
const requests = after.requests - before.requests;
process.stdout.write(JSON.stringify({
  reqPerSec: result.requests.total / duration,
  completed: result.requests.total,
  non2xx: result.non2xx,
  errors: result.errors + result.timeouts,
  latencyP50: result.latency.p50,
  latencyP99: result.latency.p99,
  serverRequests: requests,
  statementsPerRequest: requests ? (after.statements - before.statements) / requests : 0,
  cpuUsPerRequest: requests ? (after.cpuUser + after.cpuSystem - before.cpuUser - before.cpuSystem) / requests : 0,
}) + '\n');
