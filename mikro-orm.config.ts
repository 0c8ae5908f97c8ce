import type { Options } from '@mikro-orm/core';
import { defineConfig as definePostgreSqlConfig } from '@mikro-orm/postgresql';
import { defineConfig as defineSqliteConfig } from '@mikro-orm/sqlite';
import { defineSessionEntity } from './src/index.js';

/**
 * The ORM configuration of this repository's own app (the example app and the
 * maintenance commands read it the MikroORM way): an embedded SQLite file by
 * default, PostgreSQL when DATABASE_URL is set.  List every entity of the app
 * here, the session entity included: schema and migration tools drop tables
 * they do not know.
 */
export const Session = defineSessionEntity();

const url = process.env.DATABASE_URL;

export default (url
  ? definePostgreSqlConfig({ clientUrl: url, entities: [Session] })
  : defineSqliteConfig({ dbName: process.env.SQLITE_FILE ?? 'koa-mikro-session.sqlite', entities: [Session] })) as Options;
