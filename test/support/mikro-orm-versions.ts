/**
 * Which MikroORM 7 release to test against, as the npm registry serves it.
 *
 * MikroORM's packages pin each other exactly (a driver's peer is the one
 * @mikro-orm/core it was released with), so a consistent set is one version
 * that every package is published at, and the newest set is the newest such
 * version; the registry may lag on some packages.  @mikro-orm/decorators is
 * not released at every version: it gets its newest release at or below the
 * set's version.
 *
 * Used by test/pack.test.ts and, as a script, by .ci/run (Node >= 22.18 runs it
 * as is):
 *
 *   node test/support/mikro-orm-versions.ts newest      the `npm install` arguments of the newest set
 *   node test/support/mikro-orm-versions.ts installed   what node_modules holds; fails on a mixed set
 *   node test/support/mikro-orm-versions.ts driver-sets per database, the newest version of core + sql + its driver
 *   node test/support/mikro-orm-versions.ts report      what node_modules holds, nested copies named
 *
 * Any failure (the registry unreachable, no common version) exits non-zero.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Released 7.x versions only: no pre-releases (7.2.0-dev.10). */
const STABLE_7 = /^7\.\d+\.\d+$/;
/** Released at some versions only; its own peer is the exact core version it was released with. */
const LAGGING = '@mikro-orm/decorators';

function compare(a: string, b: string): number {
  const [x, y] = [a.split('.').map(Number), b.split('.').map(Number)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

/** Every stable 7.x version of `name` on the registry, oldest first.  Throws when npm can't answer. */
export async function published(name: string, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync('npm', ['view', name, 'versions', '--json'], { env, timeout: 60_000 }));
  } catch (error) {
    const { stderr, signal } = error as { stderr?: string; signal?: string };
    const why = signal ? `killed by ${signal} after 60 s` : stderr?.trim() || (error as Error).message;
    throw new Error(`could not ask the npm registry for the versions of ${name}: ${why}`, { cause: error });
  }
  const versions: unknown = JSON.parse(stdout);
  const list = Array.isArray(versions) ? versions : [versions];
  return list
    .filter((version): version is string => typeof version === 'string' && STABLE_7.test(version))
    .sort(compare);
}

/** The newest stable 7.x at which every one of `names` is published. */
export async function newestCommon(names: readonly string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const lists = await Promise.all(names.map((name) => published(name, env)));
  const common = lists.reduce((kept, list) => kept.filter((version) => list.includes(version)));
  if (common.length === 0) throw new Error(`no MikroORM 7 version is published for all of ${names.join(', ')}`);
  return common.at(-1)!;
}

export interface NewestSet {
  /** The version of every package but @mikro-orm/decorators. */
  version: string;
  /** name -> version, for every @mikro-orm/* package asked for. */
  packages: Record<string, string>;
  /** True when @mikro-orm/decorators is older than the set: its exact peer on core then conflicts. */
  lagging: boolean;
}

/** The newest consistent set of the given @mikro-orm/* packages. */
export async function newestSet(names: readonly string[], env?: NodeJS.ProcessEnv): Promise<NewestSet> {
  const version = await newestCommon(
    names.filter((name) => name !== LAGGING),
    env,
  );
  const packages: Record<string, string> = {};
  for (const name of names) packages[name] = version;
  let lagging = false;
  if (names.includes(LAGGING)) {
    const older = (await published(LAGGING, env)).filter((release) => compare(release, version) <= 0);
    if (older.length === 0) throw new Error(`${LAGGING} has no 7.x release at or below ${version}`);
    packages[LAGGING] = older.at(-1)!;
    lagging = packages[LAGGING] !== version;
  }
  return { version, packages, lagging };
}

/** The @mikro-orm/* packages of `root`'s package.json devDependencies. */
export async function devDependencies(root: string): Promise<string[]> {
  const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
    devDependencies?: Record<string, string>;
  };
  return Object.keys(manifest.devDependencies ?? {}).filter((name) => name.startsWith('@mikro-orm/'));
}

/**
 * What `root`/node_modules/@mikro-orm holds, name -> version, transitive
 * packages (sql, mysql) included.  Throws when a package carries a nested copy
 * of another: the run would then test a mix of versions.
 */
export async function installed(root: string): Promise<Record<string, string>> {
  const scope = join(root, 'node_modules', '@mikro-orm');
  const versions: Record<string, string> = {};
  for (const entry of (await readdir(scope)).sort()) {
    const dir = join(scope, entry);
    versions[`@mikro-orm/${entry}`] = (
      JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version: string }
    ).version;
    const nested = await readdir(join(dir, 'node_modules', '@mikro-orm')).catch(() => []);
    if (nested.length)
      throw new Error(
        `@mikro-orm/${entry} has its own copy of ${nested.map((name) => `@mikro-orm/${name}`).join(', ')}: a mixed set`,
      );
  }
  return versions;
}

/** The database each driver package serves, as test/support/databases.ts names it. */
const DRIVERS: Record<string, string> = {
  '@mikro-orm/postgresql': 'postgresql',
  '@mikro-orm/sqlite': 'sqlite',
  '@mikro-orm/mariadb': 'mariadb',
};

/**
 * Per database, the newest consistent set of what its tests need: core, sql
 * and its driver at the newest 7.x all three are published at.  The registry
 * may serve a driver at a newer version than the others (PostgreSQL's 7.2.5
 * beside MariaDB's 7.2.1): a user of that database gets it, so it is tested.
 */
export async function driverSets(
  root: string,
  env?: NodeJS.ProcessEnv,
): Promise<{ database: string; version: string }[]> {
  const drivers = (await devDependencies(root)).filter((name) => name in DRIVERS);
  return Promise.all(
    drivers.map(async (driver) => ({
      database: DRIVERS[driver],
      version: await newestCommon(['@mikro-orm/core', '@mikro-orm/sql', driver], env),
    })),
  );
}

/**
 * What node_modules holds, each nested copy named (for a pass that installs one database's set over the pinned rest).
 */
export async function report(root: string): Promise<string> {
  const scope = join(root, 'node_modules', '@mikro-orm');
  const lines: string[] = [];
  for (const entry of (await readdir(scope)).sort()) {
    const dir = join(scope, entry);
    const version = (JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
    const nested = await readdir(join(dir, 'node_modules', '@mikro-orm')).catch(() => [] as string[]);
    const copies = await Promise.all(
      nested.map(
        async (name) =>
          `${name}@${(JSON.parse(await readFile(join(dir, 'node_modules', '@mikro-orm', name, 'package.json'), 'utf8')) as { version: string }).version}`,
      ),
    );
    lines.push(`@mikro-orm/${entry}@${version}${copies.length ? ` (with its own ${copies.join(', ')})` : ''}`);
  }
  return lines.join(' ');
}

if (import.meta.main) {
  const root = process.cwd();
  const command = process.argv[2];
  if (command === 'newest') {
    const set = await newestSet(await devDependencies(root));
    const args = Object.entries(set.packages).map(([name, version]) => `${name}@${version}`);
    // decorators@D declares `@mikro-orm/core: D` exactly: beside core@V, npm can only install it by ignoring peers.
    if (set.lagging) args.push('--legacy-peer-deps');
    console.log(args.join('\n'));
  } else if (command === 'driver-sets') {
    for (const { database, version } of await driverSets(root)) console.log(`${database} ${version}`);
  } else if (command === 'report') {
    console.log(await report(root));
  } else if (command === 'installed') {
    const versions = await installed(root);
    console.log(
      Object.entries(versions)
        .map(([name, version]) => `${name}@${version}`)
        .join(' '),
    );
  } else {
    console.error('usage: node test/support/mikro-orm-versions.ts newest|driver-sets|report|installed');
    process.exit(2);
  }
}
