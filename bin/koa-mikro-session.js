#!/usr/bin/env node
// The koa-mikro-session command: `gc` deletes expired sessions, `keygen` prints a new secret.
// Its logic lives in src/cli.ts, built into dist/.
import { main } from '../dist/cli.js';

// Ctrl-C or a stop signal ends gc after the batch in flight, with a summary of what it deleted.
const controller = new AbortController();
const stop = () => controller.abort();
process.once('SIGINT', stop);
process.once('SIGTERM', stop);

process.exitCode = await main(process.argv.slice(2), { signal: controller.signal });
process.off('SIGINT', stop);
process.off('SIGTERM', stop);
