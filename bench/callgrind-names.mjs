// `node bench/callgrind-names.mjs <callgrind.out file> [perf map]`: writes the
// callgrind file to stdout with V8's JIT-compiled functions named, for
// callgrind_annotate.  Without it, JavaScript shows as bare addresses.
//
// The names come from the map Node writes with --perf-basic-prof
// (/tmp/perf-<pid>.map, the pid from the file's "pid:" line): lines
// "<start> <size> <name>", hex, appended as V8 makes code.  An address is named
// by the latest code object that covers it.  Kept counts come from
// bench:instructions(-http) with INSTR_KEEP=<folder> and INSTR_NODE_FLAGS
// including --perf-basic-prof, e.g.
//   INSTR_KEEP=/tmp/cg INSTR_CONTENDERS=ours INSTR_SCENARIOS=new \
//   INSTR_NODE_FLAGS='--single-threaded --no-memory-reducer --perf-basic-prof' npm run bench:instructions-http
//   node bench/callgrind-names.mjs /tmp/cg/callgrind.out.ours_new.1 > /tmp/named
//   callgrind_annotate --inclusive=yes /tmp/named
import { existsSync, readFileSync } from 'node:fs';

const [file, mapArgument] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/callgrind-names.mjs <callgrind.out file> [perf map]');
  process.exit(2);
}
const text = readFileSync(file, 'utf8');
const pid = /^pid:\s*(\d+)/m.exec(text)?.[1];
const mapFile = mapArgument ?? `/tmp/perf-${pid}.map`;
if (!existsSync(mapFile)) {
  console.error(`callgrind-names: no ${mapFile}: run the program with node --perf-basic-prof, or name the map`);
  process.exit(2);
}

// Sorted by start; of equal starts, the later line (newer code) last.
const code = [];
for (const [order, line] of readFileSync(mapFile, 'utf8').split('\n').entries()) {
  const entry = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/i.exec(line);
  if (!entry) continue;
  const start = parseInt(entry[1], 16);
  code.push({ start, end: start + parseInt(entry[2], 16), name: entry[3], order });
}
code.sort((a, b) => a.start - b.start || a.order - b.order);

/** The newest code object covering `address`, by binary search for the last start at or below it. */
function nameOf(address) {
  let low = 0;
  let high = code.length - 1;
  let found = -1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    if (code[mid].start <= address) {
      found = mid;
      low = mid + 1;
    } else high = mid - 1;
  }
  // Code objects do not overlap but for old entries whose space was reused: look back a little.
  for (let i = found; i >= 0 && i > found - 64; i--) {
    if (code[i].start <= address && address < code[i].end) return code[i].name;
  }
  return undefined;
}

let named = 0;
let unnamed = 0;
const out = text.replace(/^((?:c?fn)=\(\d+\)) 0x([0-9a-f]+)$/gm, (whole, prefix, hex) => {
  const name = nameOf(parseInt(hex, 16));
  if (!name) {
    unnamed++;
    return whole;
  }
  named++;
  return `${prefix} ${name.replaceAll(' ', '_')} [0x${hex}]`;
});
process.stdout.write(out);
console.error(`callgrind-names: ${named} functions named, ${unnamed} left as addresses (map: ${mapFile})`);
