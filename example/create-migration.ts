import { MikroORM } from '@mikro-orm/core';
import config from '../mikro-orm.config.ts';

/**
 * Writes the next migration of the example into example/migrations/<database>/
 * (`npm run example:migration`; with DATABASE_URL for PostgreSQL).  The diff is
 * made against the snapshot of the last migration, from mikro-orm.config.ts,
 * which lists every entity of the app: a config that misses one would make a
 * migration that drops its table.
 */
const orm = await MikroORM.init({ ...config, debug: false });
try {
  const initial = process.argv.includes('--initial');
  const result = initial ? await orm.migrator.createInitial() : await orm.migrator.create();
  console.log(result.fileName ? `wrote ${result.fileName}` : 'no changes: no migration written');
} finally {
  await orm.close();
}
