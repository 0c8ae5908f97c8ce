// Where the heap bytes of a request are allocated, by the library's function
// that allocated them (V8's sampling heap profiler, with the objects that
// garbage collection already freed counted too: a short-lived object per
// request is collection work later).  Two uses:
//
//   1. Preloaded into a benchmark, it samples the whole run and writes the
//      profile when the process exits:
//        HEAP_SAMPLING_OUT=/tmp/new.heapprofile BENCH_SCENARIOS='new session' BENCH_RUNS=3 \
//          node --import ./bench/heap-sampling.mjs bench/cpu.mjs
//   2. Run on such a profile with the number of requests the run made, it
//      prints KiB per request by the innermost frame of the library's dist/
//      on the allocating stack (or the package, where no frame of the
//      library is on it), then by the allocating function:
//        node bench/heap-sampling.mjs /tmp/new.heapprofile 10516
//
// Start-up (module loading) is sampled too: it shows as node:internal/modules
// and reads as a few KiB per request on a run of about 10,000 requests.
import { Session } from 'node:inspector';
import { readFileSync, writeFileSync } from 'node:fs';

const INTERVAL = 128; // bytes between samples on average; V8's default, 32 KiB, is too coarse for one request

if (import.meta.main) report(...process.argv.slice(2));
else sample(process.env.HEAP_SAMPLING_OUT ?? 'heap-sampling.heapprofile');

function sample(out) {
  const session = new Session();
  session.connect();
  session.post('HeapProfiler.enable');
  session.post('HeapProfiler.startSampling', {
    samplingInterval: INTERVAL,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  // A session connected in-process answers synchronously, so this works in an exit handler.
  process.on('exit', () =>
    session.post('HeapProfiler.stopSampling', (error, result) => {
      if (error) console.error('heap-sampling:', error.message);
      else writeFileSync(out, JSON.stringify(result.profile));
    }),
  );
}

function report(file, requestsArgument) {
  const requests = Number(requestsArgument);
  if (!file || !(requests > 0)) {
    console.error('usage: node bench/heap-sampling.mjs <profile> <requests the run made>');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const name = (frame) =>
    `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/node_modules\//, '').replace(/^.*\/dist\//, 'dist/')}:${frame.lineNumber + 1}`;
  const byLibraryFrame = new Map();
  const byAllocator = new Map();
  let total = 0;
  const add = (map, key, bytes) => map.set(key, (map.get(key) ?? 0) + bytes);
  const walk = (node, stack) => {
    const frames = [...stack, node.callFrame];
    if (node.selfSize > 0) {
      total += node.selfSize;
      add(byAllocator, name(node.callFrame), node.selfSize);
      const library = frames.findLast((frame) => frame.url.includes('/dist/') && !frame.url.includes('node_modules'));
      const where = library
        ? name(library)
        : `(outside the library) ${frames.findLast((frame) => frame.url)?.url.replace(/^.*\/node_modules\//, '') ?? ''}`;
      add(byLibraryFrame, where, node.selfSize);
    }
    for (const child of node.children) walk(child, frames);
  };
  walk(profile.head, []);
  const show = (title, map) => {
    console.log(`\n${title}`);
    for (const [key, bytes] of [...map].sort((a, b) => b[1] - a[1]).slice(0, 30))
      console.log(`${(bytes / requests / 1024).toFixed(2).padStart(8)}  ${key}`);
  };
  console.log(`${(total / requests / 1024).toFixed(2)} KiB sampled per request (${requests} requests)`);
  show("KiB per request, by the library's innermost frame", byLibraryFrame);
  show('KiB per request, by the allocating function', byAllocator);
}
