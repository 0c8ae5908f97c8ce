import { createHash } from 'node:crypto';
import type { MikroORM } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { collectGarbage, defineSessionEntity, IdleTimeout } from '../src/index.js';
import { databases } from './support/databases.js';

/**
 * A collection whose DELETE the database ends (a deadlock's victim, a lock
 * wait that timed out) runs that batch again instead of failing: InnoDB picks
 * collectors as victims now and then when several processes collect while
 * requests write (test/processes.test.ts met it). A deadlock can't be made to
 * order, so the test makes its twin, a lock-wait timeout, which the library
 * treats the same: a transaction holds one expired row, the collector's DELETE
 * waits for it until MariaDB gives up (innodb_lock_wait_timeout, 1 s here), and
 * only once the collector is waiting a second time does the transaction end.
 * Whether it waits is read from the server's lock-wait counter, not guessed
 * from the clock.
 */
const mariadb = databases.find((db) => db.name === 'mariadb')!;
const Contended = defineSessionEntity({
  name: 'GcContendedSession',
  tableName: 'gc_contended_session',
  features: [IdleTimeout],
});
const NOW = Date.UTC(2026, 0, 1);
const idOf = (label: string) => createHash('sha256').update(label).digest('hex');

type SqlManager = {
  execute(sql: string, params?: unknown[]): Promise<any>;
};

describe.skipIf(mariadb.skip)('garbage collection under lock contention on mariadb', () => {
  let orm: MikroORM;
  let previousTimeout: number;
  beforeAll(async () => {
    const admin = await mariadb.init([Contended]);
    const [row] = await (admin.em.fork() as unknown as SqlManager).execute(
      'select @@global.innodb_lock_wait_timeout as t',
    );
    previousTimeout = Number(row.t);
    // Connections opened from now on wait 1 s for a row lock (those of the ORM below).
    await (admin.em.fork() as unknown as SqlManager).execute('set global innodb_lock_wait_timeout = 1');
    await admin.close(true);
    orm = await mariadb.init([Contended]);
  });
  afterAll(async () => {
    if (orm) {
      await (orm.em.fork() as unknown as SqlManager).execute(
        `set global innodb_lock_wait_timeout = ${previousTimeout}`,
      );
      await orm.close(true);
    }
  });

  const lockWaits = async () => {
    const [row] = await (orm.em.fork() as unknown as SqlManager).execute(
      "show global status like 'Innodb_row_lock_waits'",
    );
    return Number(row.Value);
  };

  test('a DELETE that timed out waiting for a lock is run again, and the run deletes every expired row', async () => {
    const expired = ['a', 'b', 'c'].map(idOf);
    const em = orm.em.fork() as unknown as SqlManager;
    for (const id of expired) {
      await em.execute(
        'insert into gc_contended_session (id, created, version, data, flash, idle_expire) values (?, ?, 1, ?, ?, ?)',
        [id, NOW / 1000 - 100, '{}', '{}', NOW / 1000 - 10],
      );
    }
    // A request's transaction holds the first expired row.
    const holder = orm.em.fork();
    await holder.begin();
    await holder
      .getConnection()
      .execute(
        'select id from gc_contended_session where id = ? for update',
        [expired[0]],
        'all',
        holder.getTransactionContext(),
      );
    const waitsBefore = await lockWaits();
    const run = collectGarbage({ orm, entity: Contended, idleTimeout: 60, clock: () => NOW, batchSize: 10 });
    let settled = false;
    run.then(
      () => (settled = true),
      () => (settled = true),
    );
    // Once the collector waits for the second time, its first DELETE has timed out: let it through.
    // (Without the retry the run fails after the first wait, and the loop ends there.)
    while (!settled && (await lockWaits()) < waitsBefore + 2) await new Promise((resolve) => setImmediate(resolve));
    await holder.commit();
    await expect(run).resolves.toEqual({ deleted: 3, batches: 1 });
    // It did wait, and more than once: the test went through the timeout it is about.
    expect(await lockWaits()).toBeGreaterThanOrEqual(waitsBefore + 2);
    const [left] = await (orm.em.fork() as unknown as SqlManager).execute(
      'select count(*) as n from gc_contended_session',
    );
    expect(Number(left.n)).toBe(0);
  });
});
