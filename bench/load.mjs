// The load generator, in a process of its own for the whole run: autocannon
// against one contender and one route per message, a warm-up, then the measured
// run between two /__stats snapshots.  Started with an IPC channel (by run.mjs
// and profile.mjs); each message { url, path, cookies, connections, duration, warmup }
// is answered with one result message.  `cookies`: one Cookie header per
// connection (null: no cookie, a new session per request).
import autocannon from 'autocannon';

function run({ url, path, cookies, connections }, seconds) {
  let next = 0;
  return autocannon({
    url: url + path,
    connections,
    duration: seconds,
    // Each connection (autocannon client) gets its own session cookie.
    setupClient: cookies ? (client) => client.setHeaders({ cookie: cookies[next++ % cookies.length] }) : undefined,
  });
}

/** Seconds autocannon ran, from its own start and finish stamps (the asked duration if it has none). */
function elapsed(result, asked) {
  const ms = result.finish && result.start ? new Date(result.finish) - new Date(result.start) : NaN;
  return Number.isFinite(ms) && ms > 0 ? ms / 1000 : asked;
}

async function snapshot(url) {
  const response = await fetch(`${url}/__stats`);
  return response.json();
}

async function measure(options) {
  if (options.warmup > 0) await run(options, options.warmup);
  const before = await snapshot(options.url);
  const result = await run(options, options.duration);
  const after = await snapshot(options.url);
  const requests = after.requests - before.requests;
  return {
    // Over the time it really ran: autocannon stops at its next 1-second sample tick, so a
    // fractional duration runs longer than asked.
    reqPerSec: result.requests.total / elapsed(result, options.duration),
    completed: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    latencyP50: result.latency.p50,
    latencyP99: result.latency.p99,
    serverRequests: requests,
    statementsPerRequest: requests ? (after.statements - before.statements) / requests : 0,
    cpuUsPerRequest: requests ? (after.cpuUser + after.cpuSystem - before.cpuUser - before.cpuSystem) / requests : 0,
  };
}

process.on('message', async (options) => {
  try {
    process.send({ ok: true, result: await measure(options) });
  } catch (error) {
    process.send({ ok: false, error: String(error?.stack ?? error) });
  }
});
process.on('disconnect', () => process.exit(0)); // the runner is gone
