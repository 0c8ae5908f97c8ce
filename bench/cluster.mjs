// A bench server run as WORKERS processes behind Node's cluster module, as an app scales out on
// one machine: one port, each new connection dealt to the next worker by the primary (round robin,
// Node's default on Linux), a keep-alive connection then stays with its worker.
//   WORKERS=2 PORT=4201 MODE=... node bench/cluster.mjs server-ours.mjs
// The workers start one after the other, since each server refreshes its table as it starts. Once
// all listen, the primary prints "ready <pid> <pid> ..." (the workers' pids, for /proc) on stdout.
// It stops the workers on SIGTERM / SIGINT and when the runner that started it goes away; a worker
// whose primary is gone stops by itself (common.mjs's serve()).
import cluster from 'node:cluster';

const server = new URL(process.argv[2], import.meta.url).pathname;
const count = Number(process.env.WORKERS ?? 1);
cluster.setupPrimary({ exec: server, silent: true });

const workers = [];
for (let i = 0; i < count; i++) {
  const worker = cluster.fork();
  worker.process.stderr.pipe(process.stderr);
  worker.process.stdout.resume(); // its own "ready": the primary says it for all of them
  await new Promise((resolve, reject) => {
    worker.once('listening', resolve);
    worker.once('exit', (code) => reject(new Error(`worker ${i + 1} of ${server} exited with ${code}`)));
  });
  workers.push(worker);
}
process.stdout.write(`ready ${workers.map((worker) => worker.process.pid).join(' ')}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await Promise.all(
    workers.map(
      (worker) =>
        new Promise((resolve) => {
          if (worker.process.exitCode !== null) return resolve();
          worker.process.once('exit', resolve);
          worker.process.kill('SIGTERM');
          setTimeout(() => worker.process.kill('SIGKILL'), 3000).unref();
        }),
    ),
  );
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
