import { type EntityManager } from '@mikro-orm/core';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { defineSessionEntity } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, type Harness, type HarnessOptions } from './support/app.js';
import { schemaChangeTests } from './support/native-statements.js';

/**
 * On MariaDB the session row's own statements (its SELECT, and the INSERT,
 * UPDATE and DELETE of the end-of-request write) are mysql2 prepared
 * statements (src/mysql-statements.ts) wherever MikroORM would run the same
 * statement on the same pool: each connection prepares a text once.  With a
 * pool of one connection, the server's own counters of that connection
 * (Com_stmt_prepare, Com_stmt_execute) tell the two paths apart: MikroORM's
 * sends text queries, which count in neither.
 */
const mariadb = databases.find((db) => db.name === 'mariadb')!;
const Prepared = defineSessionEntity({ name: 'MariaPreparedSession', tableName: 'maria_prepared_session' });
const SELECT = /^select \* from `maria_prepared_session` where `id` = \?$/;
const ONE_CONNECTION: HarnessOptions['orm'] = { pool: { min: 0, max: 1 } };

type SqlManager = EntityManager & { execute(sql: string): Promise<{ Variable_name: string; Value: string }[]> };

/** The statements the (only) connection of the pool has prepared and executed so far. */
async function counters(h: Harness): Promise<{ prepared: number; executed: number }> {
  const rows = await (h.orm.em.fork() as SqlManager).execute(
    "show session status where Variable_name in ('Com_stmt_prepare', 'Com_stmt_execute')",
  );
  const value = (name: string) => Number(rows.find((row) => row.Variable_name === name)!.Value);
  return { prepared: value('Com_stmt_prepare'), executed: value('Com_stmt_execute') };
}

/** What `fn` made the connection prepare and execute. */
async function during(h: Harness, fn: () => Promise<unknown>): Promise<{ prepared: number; executed: number }> {
  const before = await counters(h);
  await fn();
  const after = await counters(h);
  return { prepared: after.prepared - before.prepared, executed: after.executed - before.executed };
}

describe.skipIf(mariadb.skip)("the session row's statements as mysql2 prepared statements", () => {
  let h: Harness;
  const errors: unknown[] = [];
  beforeAll(async () => {
    h = await harness(mariadb, { entity: Prepared, orm: ONE_CONNECTION });
    h.app.on('error', (error) => errors.push(error));
  });
  afterAll(() => h?.close());

  test('each statement is prepared once on the connection, and executed after; the logger still shows it', async () => {
    const client = h.client();
    let created: string[] = [];
    expect(
      await during(h, async () => (created = await h.count(() => client.post('/set', { color: 'blue' })))),
    ).toEqual({ prepared: 1, executed: 1 });
    expect(created).toEqual([
      expect.stringMatching(/^insert into `maria_prepared_session` .* values \(\?, \?, \?, \?, \?\)$/),
    ]);
    const reads = await during(h, async () => {
      for (let i = 0; i < 3; i++) {
        const sql = await h.count(async () => expect((await client.get('/get?key=color')).json.value).toBe('blue'));
        expect(sql).toHaveLength(1);
        expect(sql[0]).toMatch(SELECT);
      }
    });
    expect(reads).toEqual({ prepared: 1, executed: 3 });
    const writes = await during(h, async () => {
      for (let i = 0; i < 3; i++)
        await client.post('/set', { color: `blue ${i}`, list: [i, { i }], flag: i % 2 === 0 });
    });
    // Three SELECTs (prepared already) and three UPDATEs (prepared once).
    expect(writes).toEqual({ prepared: 1, executed: 6 });
    expect((await client.get('/state')).json.data).toEqual({ color: 'blue 2', list: [2, { i: 2 }], flag: true });
    expect(await during(h, () => client.post('/invalidate', {}))).toEqual({ prepared: 1, executed: 2 });
    expect((await client.get('/get?key=color')).json.value).toBe(null);
    expect(errors).toEqual([]);
  });

  schemaChangeTests(() => ({ h, errors }), {
    addColumn: 'alter table `maria_prepared_session` add column `extra` int',
    dropColumn: 'alter table `maria_prepared_session` drop column `extra`',
    renameAway: 'rename table `maria_prepared_session` to `maria_prepared_session_away`',
    renameBack: 'rename table `maria_prepared_session_away` to `maria_prepared_session`',
  });
});

describe.skipIf(mariadb.skip)("where a prepared statement can't be used, MikroORM's statement runs", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  const start = async (options: HarnessOptions = {}) =>
    (h = await harness(mariadb, { entity: Prepared, ...options, orm: { ...ONE_CONNECTION, ...options.orm } }));

  /** Reads the session twice: the SELECT is MikroORM's text query both times, nothing prepared. */
  async function expectMikroOrmsPath(h: Harness): Promise<void> {
    const client = h.client();
    await client.post('/set', { color: 'blue' });
    const reads = await during(h, async () => {
      for (let i = 0; i < 2; i++) expect((await client.get('/get?key=color')).json.value).toBe('blue');
    });
    expect(reads).toEqual({ prepared: 0, executed: 0 });
  }

  test("transaction: true: the request's transaction runs it", async () => {
    await expectMikroOrmsPath(await start({ options: { transaction: true } }));
  });

  test("an onCreateConnection hook of the app's, which MikroORM runs on each connection it takes first", async () => {
    let hooked = 0;
    await expectMikroOrmsPath(await start({ orm: { onCreateConnection: async () => void hooked++ } }));
    expect(hooked).toBe(1);
  });

  test('a native client that is not a mysql2 pool (another driver, a changed MikroORM)', async () => {
    const h = await start();
    h.orm.em.getConnection('write').getNativeClient = async () => ({});
    await expectMikroOrmsPath(h);
  });
});
