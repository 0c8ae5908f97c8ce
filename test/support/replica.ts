import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { MikroORM } from '@mikro-orm/postgresql';
import { CLIENT_URLS, databases } from './databases.js';

/**
 * A streaming replica of the test PostgreSQL server, made for one test file and removed after it: a base backup
 * (`pg_basebackup -R -X stream`) started as a hot standby on a free port, replaying the primary's commits
 * `REPLICA_DELAY` seconds late (`recovery_min_apply_delay`), so a test sees real replication lag without sleeping.
 *
 * It runs as the `postgres` OS user (`runuser` when the tests run as root: PostgreSQL refuses to run as root), from
 * the binaries of the primary's major version (`/usr/lib/postgresql/<major>/bin`). The primary must accept
 * replication connections from 127.0.0.1: `.ci/run` adds `host replication all 127.0.0.1/32 trust` to its pg_hba.conf;
 * these tests never edit system files. A replica that can't be made skips the replica tests with a printed reason,
 * and with CI=true it fails the run, as databases.ts does for an unreachable database.
 */

/** Seconds the replica replays each commit after the primary made it. */
export const REPLICA_DELAY = 3;

export interface ReplicaServer {
  readonly host: string;
  readonly port: number;
  /** Runs a statement on the replica, over a connection of its own (`?` placeholders). */
  execute<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Resolves once the replica has replayed every commit the primary had made when it was called. */
  catchUp(timeoutMs?: number): Promise<void>;
  /** Stops the replica and deletes its files; safe to call twice. */
  stop(): Promise<void>;
}

export interface Replica {
  /** Why the replica tests are skipped, or undefined when the replica runs. */
  readonly skip: string | undefined;
  readonly server: ReplicaServer | undefined;
}

/** The temporary directories of replicas: `<tmp>/koa-mikro-session-replica-XXXXXX/{owner,data,log,...}`. */
const PREFIX = 'koa-mikro-session-replica-';
const exec = promisify(execFile);
const asRoot = process.getuid?.() === 0;

/** The command line that runs `command` as the server's OS user. */
function asServerUser(command: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

async function run(dir: string, command: string, args: string[], timeout: number): Promise<void> {
  const [file, argv] = asServerUser(command, args);
  const password = decodeURIComponent(new URL(CLIENT_URLS.postgresql).password);
  const env = { ...process.env, PGCONNECT_TIMEOUT: '10', ...(password ? { PGPASSWORD: password } : {}) };
  try {
    await exec(file, argv, { cwd: dir, timeout, env });
  } catch (error) {
    const { stderr, message } = error as { stderr?: string; message: string };
    throw new Error(`${command.split('/').pop()} failed: ${stderr?.trim() || message}`);
  }
}

/** A port nothing listens on now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A small ORM that only runs statements (no entities), one connection. */
function connect(clientUrl: string): Promise<MikroORM> {
  return MikroORM.init({
    clientUrl,
    entities: [],
    discovery: { warnWhenNoEntities: false },
    pool: { min: 0, max: 1 },
    allowGlobalContext: true,
  });
}

const execute = <T>(orm: MikroORM, sql: string, params: unknown[] = []) =>
  orm.em.getConnection().execute(sql, params, 'all') as Promise<T[]>;

/** `pg_ctl stop -m immediate` on a replica's directory, then its removal; never throws. */
function removeSync(dir: string, pgCtl: string | undefined): void {
  if (pgCtl && existsSync(join(dir, 'data', 'postmaster.pid'))) {
    try {
      const [file, argv] = asServerUser(pgCtl, ['-D', join(dir, 'data'), 'stop', '-m', 'immediate', '-w']);
      execFileSync(file, argv, { cwd: '/', stdio: 'ignore', timeout: 30_000 });
    } catch {
      // already stopped
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Replicas left by test processes that died without their teardown (killed workers): stopped and removed. */
function removeOrphans(pgCtl: string): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(PREFIX)) continue;
    const dir = join(tmpdir(), name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(dir, 'owner'), 'utf8'));
    } catch {
      continue; // being made right now
    }
    try {
      process.kill(owner, 0);
      continue; // its test process still runs (another run, in parallel): not ours to touch
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    removeSync(dir, pgCtl);
  }
}

async function start(): Promise<ReplicaServer> {
  const url = new URL(CLIENT_URLS.postgresql);
  const primary = await connect(CLIENT_URLS.postgresql);
  let replica: MikroORM | undefined;
  let dir: string | undefined;
  let pgCtl: string | undefined;
  const onExit = () => dir && removeSync(dir, pgCtl);
  try {
    const [{ version }] = await execute<{ version: string }>(
      primary,
      "select current_setting('server_version_num') as version",
    );
    const bin = `/usr/lib/postgresql/${Math.floor(Number(version) / 10_000)}/bin`;
    pgCtl = join(bin, 'pg_ctl');
    if (!existsSync(pgCtl)) {
      const installed = existsSync('/usr/lib/postgresql') ? readdirSync('/usr/lib/postgresql').join(', ') : 'none';
      throw new Error(`the server is PostgreSQL ${version} but ${bin} has no pg_ctl (installed: ${installed})`);
    }
    removeOrphans(pgCtl);

    // A hot standby needs these at least as high as on the primary.
    const settings = await execute<{ name: string; setting: string }>(
      primary,
      `select name, setting from pg_settings where name in
        ('max_connections', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction')`,
    );

    dir = mkdtempSync(join(tmpdir(), PREFIX));
    process.once('exit', onExit);
    writeFileSync(join(dir, 'owner'), String(process.pid));
    // The server's own configuration files, never the primary's (on Debian these live in /etc, outside the data).
    writeFileSync(join(dir, 'replica.conf'), '# koa-mikro-session test replica: settings are on the command line\n');
    writeFileSync(join(dir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\n');
    writeFileSync(join(dir, 'pg_ident.conf'), '');
    if (asRoot) execFileSync('chown', ['-R', 'postgres:', dir]);

    const data = join(dir, 'data');
    await run(
      dir,
      join(bin, 'pg_basebackup'),
      [
        ...['-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username) || 'postgres'],
        ...['-D', data, '-R', '-X', 'stream', '-c', 'fast', '--no-sync', '--no-password'],
      ],
      300_000,
    );

    const options = (port: number) =>
      [
        `-p ${port}`,
        `-k '${dir}'`,
        '-c listen_addresses=127.0.0.1',
        `-c config_file='${join(dir!, 'replica.conf')}'`,
        `-c hba_file='${join(dir!, 'pg_hba.conf')}'`,
        `-c ident_file='${join(dir!, 'pg_ident.conf')}'`,
        '-c hot_standby=on',
        `-c recovery_min_apply_delay=${REPLICA_DELAY}s`,
        // The primary keeps the rows a replica query still reads: no query is cancelled by a conflict.
        '-c hot_standby_feedback=on',
        '-c fsync=off',
        ...settings.map(({ name, setting }) => `-c ${name}=${setting}`),
      ].join(' ');

    // The port is free when chosen, and may be taken before the server binds it: a few tries.
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        await run(
          dir,
          pgCtl,
          ['-D', data, '-l', join(dir, 'log'), '-o', options(port), '-w', '-t', '120', 'start'],
          150_000,
        );
        break;
      } catch (error) {
        if (attempt === 3) {
          const log = existsSync(join(dir, 'log')) ? readFileSync(join(dir, 'log'), 'utf8').trim().split('\n') : [];
          throw new Error(`${(error as Error).message}\n${log.slice(-10).join('\n')}`);
        }
      }
    }

    const replicaUrl = new URL(CLIENT_URLS.postgresql);
    replicaUrl.hostname = '127.0.0.1';
    replicaUrl.port = String(port);
    replica = await connect(replicaUrl.toString());
    const [{ standby }] = await execute<{ standby: boolean }>(replica, 'select pg_is_in_recovery() as standby');
    if (!standby) throw new Error(`the server on port ${port} is not in recovery: not a replica`);

    let stopped: Promise<void> | undefined;
    const server: ReplicaServer = {
      host: '127.0.0.1',
      port,
      execute: (sql, params) => execute(replica!, sql, params),
      async catchUp(timeoutMs = 45_000) {
        const [{ lsn }] = await execute<{ lsn: string }>(primary, 'select pg_current_wal_lsn()::text as lsn');
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const [{ done }] = await execute<{ done: boolean | null }>(
            replica!,
            'select pg_last_wal_replay_lsn() >= ?::text::pg_lsn as done',
            [lsn],
          );
          if (done) return;
          if (Date.now() > deadline) throw new Error(`the replica did not replay ${lsn} within ${timeoutMs} ms`);
          await delay(50);
        }
      },
      stop: () =>
        (stopped ??= (async () => {
          await Promise.allSettled([replica!.close(true), primary.close(true)]);
          process.off('exit', onExit);
          removeSync(dir!, pgCtl);
        })()),
    };
    return server;
  } catch (error) {
    await Promise.allSettled([replica?.close(true), primary.close(true)]);
    if (dir) {
      process.off('exit', onExit);
      removeSync(dir, pgCtl);
    }
    throw error;
  }
}

async function build(): Promise<Replica> {
  const postgresql = databases.find((db) => db.name === 'postgresql')!;
  // Unreachable (databases.ts said so, and fails under CI=true) or not in TEST_DATABASES: nothing to replicate.
  if (postgresql.skip) return { skip: `no replica: postgresql is skipped (${postgresql.skip})`, server: undefined };
  try {
    return { skip: undefined, server: await start() };
  } catch (error) {
    let reason = `no PostgreSQL replica could be made: ${(error as Error).message}`;
    if (/pg_hba\.conf/.test(reason)) {
      reason += `\n  (allow replication from 127.0.0.1 in the server's pg_hba.conf, as .ci/run does: host replication all 127.0.0.1/32 trust, then SELECT pg_reload_conf())`;
    }
    if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: the replica tests must run)`);
    console.warn(`[koa-mikro-session tests] skipping the replica tests: ${reason}`);
    return { skip: reason, server: undefined };
  }
}

/** Made once, when the test file that uses it loads; that file stops it in its afterAll (and a process exit does). */
export const replica: Replica = await build();
