import { join } from 'node:path';
import type { Options } from '@mikro-orm/core';
import { Migrator } from '@mikro-orm/migrations';
import { defineConfig as definePostgreSqlConfig } from '@mikro-orm/postgresql';
import { defineConfig as defineSqliteConfig } from '@mikro-orm/sqlite';
import { entities } from './example/entities.ts';

/**
 * The ORM configuration of this repository's own app, the example in example/
 * (`npm start`; the maintenance commands read it the MikroORM way): an
 * embedded SQLite file by default, PostgreSQL when DATABASE_URL is set.
 *
 * It lists every entity of the app, the session entity included: schema and
 * migration tools drop the tables they do not know.  Migrations are SQL, so
 * each database has its own folder: example/migrations/sqlite and
 * example/migrations/postgresql.
 */
const root = import.meta.dirname;
const url = process.env.DATABASE_URL;
const dialect = url ? 'postgresql' : 'sqlite';

const common = {
  entities,
  baseDir: root,
  extensions: [Migrator],
  migrations: {
    path: join(root, 'example', 'migrations', dialect),
    // One snapshot name whatever the database is called, so a new migration is a diff against the last one.
    snapshotName: '.snapshot',
    // Running the migrations must not rewrite files of the repository.
    snapshotOnMigrate: false,
  },
};

export default (url
  ? definePostgreSqlConfig({ ...common, clientUrl: url })
  : defineSqliteConfig({
      ...common,
      dbName: process.env.SQLITE_FILE ?? join(root, 'example', 'koa-mikro-session.sqlite'),
    })) as Options;
