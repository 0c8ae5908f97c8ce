import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { MikroORM } from '@mikro-orm/core';
import config from '../mikro-orm.config.ts';
import { createApp } from './app.ts';

/**
 * `npm start`: the example app on an embedded SQLite file (SQLITE_FILE,
 * default example/koa-mikro-session.sqlite), or on PostgreSQL when
 * DATABASE_URL is set.  The schema is brought up to date by the migrations
 * of example/migrations at every start.  Listens on PORT (default 3000) and
 * HOST (default: every interface).
 */
const log = (line: string) => console.log(`[example] ${line}`);

const orm = await MikroORM.init({ ...config, debug: process.env.DEBUG_SQL === '1' });
const database = process.env.DATABASE_URL
  ? `PostgreSQL ${redact(process.env.DATABASE_URL)}`
  : `SQLite ${orm.config.get('dbName')}`;

const applied = await orm.migrator.up();
log(`${database}: ${applied.length ? `applied ${applied.map((m) => m.name).join(', ')}` : 'schema up to date'}`);

const app = createApp({ orm, secret: secret() });
const server = app.listen(Number(process.env.PORT ?? 3000), process.env.HOST || undefined, () => {
  const { port } = server.address() as AddressInfo;
  const host =
    process.env.HOST && process.env.HOST !== '0.0.0.0' && process.env.HOST !== '::' ? process.env.HOST : 'localhost';
  log(`listening on http://${host.includes(':') ? `[${host}]` : host}:${port}/ (Ctrl-C to stop)`);
});

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    server.close();
    server.closeAllConnections();
    void orm.close().then(() => process.exit(0));
  });
}

/** SESSION_SECRET, or for the demo a key generated once and kept in a git-ignored file. */
function secret(): string | string[] {
  const given = process.env.SESSION_SECRET;
  if (given) return given.includes(',') ? given.split(',').map((key) => key.trim()) : given;
  const file = process.env.SESSION_SECRET_FILE ?? join(import.meta.dirname, '.session-secret');
  if (existsSync(file)) {
    log(`SESSION_SECRET is not set: using the demo key stored in ${file}`);
    return readFileSync(file, 'utf8').trim();
  }
  const key = randomBytes(32).toString('base64url');
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  log(
    `SESSION_SECRET is not set: generated a demo key and stored it in ${file}${process.env.SESSION_SECRET_FILE ? '' : ' (git-ignored)'}; in production set SESSION_SECRET (npx koa-mikro-session keygen prints one)`,
  );
  return key;
}

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(DATABASE_URL)';
  }
}
