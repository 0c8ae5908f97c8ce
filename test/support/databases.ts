import { MikroORM as MariaDbORM } from '@mikro-orm/mariadb';
import { MikroORM as PostgreSqlORM } from '@mikro-orm/postgresql';
import { MikroORM as SqliteORM } from '@mikro-orm/sqlite';
import type { EntityName, MikroORM, Options } from '@mikro-orm/core';

/**
 * The databases every behaviour is proven on.  SQLite always runs; PostgreSQL
 * and MariaDB run when reachable, and with CI=true an unreachable one fails.
 */
export interface TestDatabase {
  readonly name: 'sqlite' | 'postgresql' | 'mariadb';
  /** Why the database's tests are skipped, or undefined when it is reachable. */
  readonly skip: string | undefined;
  /**
   * A fresh ORM over these entities with a clean schema; `sql` collects every statement; `overrides` change the ORM's
   * options.
   */
  init(entities: EntityName<any>[], sql?: string[], overrides?: Partial<Options>): Promise<MikroORM>;
}

/** Where the server databases are; a test that connects through a proxy of its own starts from these. */
export const CLIENT_URLS = {
  postgresql: process.env.PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/test',
  mariadb: process.env.MARIADB_URL ?? 'mysql://root@127.0.0.1:3306/test',
} as const;

const TARGETS = {
  sqlite: { init: SqliteORM.init.bind(SqliteORM), options: { dbName: ':memory:' } },
  postgresql: { init: PostgreSqlORM.init.bind(PostgreSqlORM), options: { clientUrl: CLIENT_URLS.postgresql } },
  mariadb: { init: MariaDbORM.init.bind(MariaDbORM), options: { clientUrl: CLIENT_URLS.mariadb } },
} as const;

function optionsFor(name: TestDatabase['name'], entities: EntityName<any>[], sql?: string[]): Options {
  return {
    ...TARGETS[name].options,
    entities,
    // Statements are counted through the ORM's logger: the same view a user has.
    debug: ['query'],
    colors: false,
    logger: (message: string) => {
      const match = /^\[query\] (.*?)(?: \[took .*)?$/s.exec(message);
      if (match && sql) sql.push(match[1]);
    },
    allowGlobalContext: true,
  } as Options;
}

async function probe(name: TestDatabase['name']): Promise<string | undefined> {
  if (name === 'sqlite') return undefined;
  let orm: MikroORM | undefined;
  try {
    orm = (await TARGETS[name].init({
      ...optionsFor(name, []),
      discovery: { warnWhenNoEntities: false },
    } as any)) as MikroORM;
    // MikroORM 7 connects lazily: connect now so the probe really reaches the server.
    await orm.connect();
    const check = await orm.checkConnection();
    if (check.ok) return undefined;
    return `${name} unreachable: ${check.reason}`;
  } catch (error) {
    return `${name} unreachable: ${(error as Error).message}`;
  } finally {
    await orm?.close(true);
  }
}

/** TEST_DATABASES=postgresql,sqlite runs only those (CI's pass on one database's newest MikroORM); all by default. */
const selected = process.env.TEST_DATABASES?.split(',').map((name) => name.trim());

async function build(name: TestDatabase['name']): Promise<TestDatabase> {
  // Not selected: its suites are skipped, but init() still works for the few tests that use SQLite
  // directly (option checks that need some ORM); nothing is probed, so nothing fails for it.
  let skip =
    selected && !selected.includes(name) ? `not in TEST_DATABASES=${process.env.TEST_DATABASES}` : await probe(name);
  if (skip && selected && !selected.includes(name)) return { name, skip, init: (...args) => initialise(name, ...args) };
  if (skip && process.env.CI === 'true') throw new Error(`${skip} (CI=true: every database must be up)`);
  if (skip) console.warn(`[koa-mikro-session tests] skipping ${name}: ${skip}`);
  return {
    name,
    skip,
    init: (...args) => initialise(name, ...args),
  };
}

async function initialise(
  name: TestDatabase['name'],
  ...[entities, sql, overrides]: Parameters<TestDatabase['init']>
): Promise<MikroORM> {
  const orm = (await TARGETS[name].init({ ...optionsFor(name, entities, sql), ...overrides } as any)) as MikroORM;
  await orm.schema.refresh();
  sql?.splice(0);
  return orm;
}

/** Probed once per test file. */
export const databases: TestDatabase[] = await Promise.all((['sqlite', 'postgresql', 'mariadb'] as const).map(build));
