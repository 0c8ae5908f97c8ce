import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MikroORM, type EntityMetadata, type Options } from '@mikro-orm/core';
import { SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { generateSecretKey } from './codec.js';
import { inspectSessionEntity } from './entity.js';
import { ConfigurationError, SessionError } from './errors.js';
import { collectGarbage, countExpiredSessions, MAX_BATCH_SIZE, planCollection } from './gc.js';

/**
 * The `koa-mikro-session` command: `gc` deletes expired sessions, `keygen`
 * prints a new secret.  bin/koa-mikro-session.js runs main(); tests may call
 * it with their own streams.
 */

/** Where the command reads and writes; the process's own by default. */
export interface CliIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  /** The directory the config is searched in. */
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Aborts a running gc between two batches (bin/ wires SIGINT and SIGTERM to it). */
  signal?: AbortSignal;
}

/** A failure the user can fix: printed as one line, without a stack trace. */
class CliError extends Error {
  override name = 'CliError';
}

const NAME = 'koa-mikro-session';

/** Runs the command line `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const { stdout = process.stdout, stderr = process.stderr, cwd = process.cwd(), env = process.env, signal } = io;
  const out = (line: string) => stdout.write(`${line}\n`);
  const err = (line: string) => stderr.write(`${line}\n`);
  let verbose = false;

  const program = new Command(NAME)
    .description('Maintenance commands of koa-mikro-session: server-side sessions stored as MikroORM entities.')
    .version(packageVersion(), '-V, --version')
    .exitOverride()
    .configureOutput({ writeOut: (text) => stdout.write(text), writeErr: (text) => stderr.write(text) })
    .showHelpAfterError('(run with --help for usage)');

  program
    .command('keygen')
    .description('print a new secret key (32 random bytes, base64url) for the secret option')
    .action(() => {
      out(generateSecretKey());
    });

  let exitCode = 0;
  program
    .command('gc')
    .description('delete the sessions expired by idle or absolute timeout, in batches')
    .option(
      '-c, --config <path>',
      "the MikroORM config file (default: the MikroORM CLI's search: mikro-orm.config.ts or .js in the current " +
        'directory)',
    )
    .option(
      '--context <name>',
      'the contextName to use when the config file exports several configs',
      env.MIKRO_ORM_CONTEXT_NAME ?? 'default',
    )
    .option('-e, --entity <name>', 'the session entity (default: the only session entity of the config)')
    .option(
      '--idle-timeout <seconds>',
      "the app's idleTimeout option (rows with their own idle timeout are collected anyway)",
      seconds,
    )
    .option(
      '--absolute-timeout <seconds>',
      "the app's absoluteTimeout option (rows with their own absolute timeout are collected anyway)",
      seconds,
    )
    .option('--batch-size <rows>', `rows per batch, 1 to ${MAX_BATCH_SIZE}`, batchSize, 1000)
    .option('--verbose', 'log the SQL statements, and the stack of an unexpected error')
    .action(async (options: GcOptions) => {
      verbose = Boolean(options.verbose);
      exitCode = await gc(options, { stdout, stderr, cwd, env, signal }, out, err);
    });

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode; // commander printed its message or help
    err(`${NAME}: ${describeError(error)}`);
    if (verbose && !expected(error) && error instanceof Error && error.stack) err(error.stack);
    return 1;
  }
}

interface GcOptions {
  config?: string;
  context: string;
  entity?: string;
  idleTimeout?: number;
  absoluteTimeout?: number;
  batchSize: number;
  verbose?: boolean;
}

async function gc(
  options: GcOptions,
  io: CliIo,
  out: (line: string) => void,
  err: (line: string) => void,
): Promise<number> {
  const { path, config } = await loadConfig(options.config, options.context, io.cwd, io.env);
  const orm = await initOrm(config, path, options.verbose ? (message) => err(message) : undefined);
  try {
    const entity = pickEntity(orm, options.entity);
    // One `now` for the count and the deletes, so the bar's total matches what is deleted.
    const now = Date.now();
    const common = {
      orm,
      entity: entity.class,
      idleTimeout: options.idleTimeout ?? null,
      absoluteTimeout: options.absoluteTimeout ?? null,
      clock: () => now,
    };
    const plan = planCollection(common, undefined, 'gc');
    if (!plan.where) {
      throw new CliError(
        `no timeout is on for ${entity.className}: pass the app's --idle-timeout and/or --absolute-timeout ` +
          '(or embed ConfigurableIdleTimeout / ConfigurableAbsoluteTimeout for per-session timeouts)',
      );
    }
    const total = await countExpiredSessions(common);
    err(
      `${plural(total, 'expired session')} in ${entity.className} (table ${entity.tableName}; ` +
        `${plan.rules.join(', ')})`,
    );
    const progress = io.stderr.isTTY === true ? new Bar(io.stderr, total) : new Lines(err, total);
    let done = { deleted: 0, batches: 0 };
    try {
      done = await collectGarbage({
        ...common,
        batchSize: options.batchSize,
        signal: io.signal,
        onBatch: (p) => {
          done = p;
          progress.update(p.deleted, p.batches);
        },
      });
    } catch (error) {
      if (!io.signal?.aborted) throw error;
      progress.stop();
      out(`interrupted: deleted ${summary(done)}`);
      return 130;
    } finally {
      progress.stop(); // also on a failure: a terminal gets its cursor back
    }
    out(`deleted ${summary(done)}`);
    return 0;
  } finally {
    await orm.close(true);
  }
}

const summary = ({ deleted, batches }: { deleted: number; batches: number }) =>
  `${plural(deleted, 'expired session')} in ${plural(batches, 'batch', 'batches')}`;

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

/** A progress bar on a terminal. */
class Bar {
  readonly #bar: SingleBar;
  #total: number;
  constructor(stream: NodeJS.WritableStream, total: number) {
    this.#total = total;
    this.#bar = new SingleBar({
      stream,
      format: 'deleting [{bar}] {percentage}% | {value}/{total} sessions | {batches} batches | {duration_formatted}',
      barCompleteChar: '\u2588',
      barIncompleteChar: '\u2591',
      hideCursor: true,
      etaBuffer: 20,
    });
    this.#bar.start(total, 0, { batches: 0 });
  }
  update(deleted: number, batches: number): void {
    // Rows that expired, or were deleted by a request, after the count.
    if (deleted > this.#total) this.#bar.setTotal((this.#total = deleted));
    this.#bar.update(deleted, { batches });
  }
  stop(): void {
    this.#bar.stop();
  }
}

/** Plain progress lines for logs: at most one a second, and the last one. */
class Lines {
  #last = 0;
  #pending: string | undefined;
  constructor(
    readonly write: (line: string) => void,
    readonly total: number,
  ) {}
  update(deleted: number, batches: number): void {
    this.#pending = `deleted ${deleted}/${Math.max(deleted, this.total)} (${plural(batches, 'batch', 'batches')})`;
    const now = Date.now();
    if (now - this.#last >= 1000) this.#flush(now);
  }
  stop(): void {
    this.#flush(Date.now());
  }
  #flush(now: number): void {
    if (this.#pending === undefined) return;
    this.write(this.#pending);
    this.#pending = undefined;
    this.#last = now;
  }
}

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a whole number.');
  return Number(value);
}

/** The range the middleware accepts for a timeout. */
const MAX_SECONDS = 100_000_000;

function seconds(value: string): number {
  const timeout = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(timeout >= 1 && timeout <= MAX_SECONDS))
    throw new InvalidArgumentError(`expected a whole number of seconds from 1 to ${MAX_SECONDS}, as the app's option.`);
  return timeout;
}

function batchSize(value: string): number {
  const size = wholeNumber(value);
  if (size < 1 || size > MAX_BATCH_SIZE)
    throw new InvalidArgumentError(`expected a whole number from 1 to ${MAX_BATCH_SIZE}.`);
  return size;
}

// --- The ORM configuration, found and loaded the way the MikroORM CLI does -----------------

/**
 * The config file the MikroORM CLI would use: MIKRO_ORM_CLI_CONFIG, the
 * `configPaths` of the "mikro-orm" section of package.json, then
 * ./src/mikro-orm.config.ts and ./mikro-orm.config.ts (when Node can load
 * TypeScript), then ./dist (or ./build, or ./src)/mikro-orm.config.js and
 * ./mikro-orm.config.js.
 */
export function configPaths(cwd: string, env: NodeJS.ProcessEnv): string[] {
  const settings = packageSettings(cwd);
  const bool = (value: string) => ['true', 't', '1'].includes(value.toLowerCase());
  const preferTs = env.MIKRO_ORM_CLI_PREFER_TS != null ? bool(env.MIKRO_ORM_CLI_PREFER_TS) : settings.preferTs;
  const typescript = preferTs ?? Boolean(process.features.typescript);
  const paths: string[] = [];
  if (env.MIKRO_ORM_CLI_CONFIG) paths.push(env.MIKRO_ORM_CLI_CONFIG);
  paths.push(...(Array.isArray(settings.configPaths) ? settings.configPaths.map(String) : []));
  paths.push('./src/mikro-orm.config.ts', './mikro-orm.config.ts');
  const build = existsSync(join(cwd, 'dist')) ? 'dist' : existsSync(join(cwd, 'build')) ? 'build' : 'src';
  paths.push(`./${build}/mikro-orm.config.js`, './mikro-orm.config.js');
  const unique = [...new Set(paths)];
  return (
    env.MIKRO_ORM_CLI_CONFIG?.endsWith('.ts') || typescript ? unique : unique.filter((path) => !/\.[mc]?ts$/.test(path))
  ).map((path) => resolvePath(cwd, path));
}

/** The "mikro-orm" section of the nearest package.json. */
function packageSettings(cwd: string): { configPaths?: unknown[]; preferTs?: boolean } {
  for (let dir = cwd; ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        return JSON.parse(readFileSync(file, 'utf8'))['mikro-orm'] ?? {};
      } catch {
        return {};
      }
    }
    if (dirname(dir) === dir) return {};
  }
}

async function loadConfig(
  given: string | undefined,
  contextName: string,
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ path: string; config: Options }> {
  let path: string;
  if (given !== undefined) {
    path = resolvePath(cwd, given);
    if (!existsSync(path)) throw new CliError(`config file not found: ${path}`);
  } else {
    const candidates = configPaths(cwd, env);
    const found = candidates.find((candidate) => existsSync(candidate));
    if (!found) {
      throw new CliError(
        `no MikroORM config found in ${cwd} (looked for ${candidates.map((c) => relative(cwd, c) || c).join(', ')}): ` +
          `pass --config <path>`,
      );
    }
    path = found;
  }
  let exports: Record<string, unknown>;
  try {
    exports = await import(pathToFileURL(path).href);
  } catch (error) {
    throw new CliError(`cannot load the MikroORM config ${path}: ${describeError(error)}${importHint(error, path)}`);
  }
  return { path, config: await searchConfiguration(exports.default ?? exports, contextName, path) };
}

function importHint(error: unknown, path: string): string {
  const code = (error as { code?: string })?.code;
  if (!/\.[mc]?ts$/.test(path)) return '';
  if (code === 'ERR_UNKNOWN_FILE_EXTENSION')
    return ' (this Node cannot load TypeScript: use Node >= 22.18, or a compiled .js config)';
  if (code === 'ERR_MODULE_NOT_FOUND')
    return " (Node loads a .ts config as it is: its relative imports need their real extension, e.g. './entities.ts')";
  return '';
}

/** The config named `contextName` among what the file exports: an object, a (async) factory, or an array of them. */
async function searchConfiguration(exported: unknown, contextName: string, path: string): Promise<Options> {
  const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;
  const named = (value: unknown) =>
    isObject(value) && ('contextName' in value ? value.contextName === contextName : contextName === 'default');
  const fromFactory = (value: unknown) =>
    isObject(value) && (!('contextName' in value) || value.contextName === contextName);
  const value = await exported;
  if (Array.isArray(value)) {
    const matches = value.filter(named);
    if (matches.length > 1) throw new CliError(`the MikroORM config '${contextName}' is not unique in ${path}`);
    if (matches.length === 1) return matches[0] as Options;
    for (const candidate of value) {
      if (typeof candidate !== 'function') continue;
      const config = await candidate(contextName);
      if (fromFactory(config)) return config as Options;
    }
    throw new CliError(
      `the MikroORM config '${contextName}' was not found in ${path}: add it to the exported array, or pass ` +
        `--context <name>`,
    );
  }
  if (typeof value === 'function') {
    const config = await value(contextName);
    if (!fromFactory(config))
      throw new CliError(`the function exported by ${path} gave no MikroORM config '${contextName}'`);
    return config as Options;
  }
  if (!isObject(value)) throw new CliError(`${path} exports no MikroORM config: export default defineConfig({ ... })`);
  if (!named(value)) throw new CliError(`the MikroORM config '${contextName}' was not what ${path} exports`);
  return value as unknown as Options;
}

async function initOrm(config: Options, path: string, log: ((message: string) => void) | undefined): Promise<MikroORM> {
  if (!config.driver) {
    throw new CliError(
      `the MikroORM config ${path} names no driver: build it with defineConfig() from your driver's package ` +
        `(@mikro-orm/postgresql, @mikro-orm/mariadb, @mikro-orm/sqlite)`,
    );
  }
  let orm: MikroORM;
  try {
    orm = await MikroORM.init({
      ...config,
      allowGlobalContext: true,
      ...(log ? { debug: ['query'], logger: log, colors: false } : { debug: false }),
    } as Options);
  } catch (error) {
    throw new CliError(`cannot start MikroORM with ${path}: ${describeError(error)}`);
  }
  let reason: string | undefined;
  try {
    await orm.connect();
    const check = await orm.checkConnection();
    if (!check.ok) reason = check.reason;
  } catch (error) {
    reason = describeError(error);
  }
  if (reason !== undefined) {
    await orm.close(true).catch(() => undefined);
    throw new CliError(`cannot connect to the database of ${path}: ${reason}`);
  }
  return orm;
}

/** The session entity named `name` (class or table name), or the only one the config has. */
function pickEntity(orm: MikroORM, name: string | undefined): EntityMetadata {
  const all = [...orm.getMetadata()].filter((meta) => !meta.abstract && !meta.embeddable && !meta.virtual);
  const sessions = all.filter((meta) => {
    try {
      inspectSessionEntity(orm, meta.class);
      return true;
    } catch (error) {
      if (error instanceof ConfigurationError) return false;
      throw error;
    }
  });
  const names = (metas: EntityMetadata[]) =>
    metas
      .map((meta) => meta.className)
      .sort()
      .join(', ') || 'none';
  if (name !== undefined) {
    const meta =
      all.find((candidate) => candidate.className === name) ?? all.find((candidate) => candidate.tableName === name);
    if (!meta) throw new CliError(`unknown entity ${name}: the config's session entities are ${names(sessions)}`);
    inspectSessionEntity(orm, meta.class); // a ConfigurationError says why it is not a session entity
    return meta;
  }
  if (sessions.length === 1) return sessions[0];
  if (sessions.length === 0) {
    throw new CliError(
      `the config has no session entity (its entities: ${names(all)}): list it in the config's entities, or pass ` +
        `--entity <name>`,
    );
  }
  throw new CliError(`the config has several session entities (${names(sessions)}): pick one with --entity <name>`);
}

// --- Errors ------------------------------------------------------------------------------

/** Errors whose message says it all. */
function expected(error: unknown): boolean {
  return error instanceof CliError || error instanceof SessionError;
}

/** An error's message on one line. */
function describeError(error: unknown): string {
  // A connection refused on every address of a host name: an AggregateError without a message of its own.
  if (error instanceof AggregateError && !error.message)
    return [...new Set(error.errors.map(describeError))].join('; ');
  const message = error instanceof Error ? error.message || error.name : String(error);
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

function packageVersion(): string {
  try {
    return JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}
