import { TableNotFoundException } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { defineSessionEntity } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, type Harness } from './support/app.js';

/**
 * On PostgreSQL the session row's own statements (its SELECT, and the INSERT,
 * UPDATE and DELETE of the end-of-request write) are pg named prepared
 * statements (src/pg-statements.ts) wherever MikroORM would run the same
 * statement on the same pool: parsed and planned once per connection. These
 * tests look at the connection itself (pg_prepared_statements), with a pool of
 * one connection so that "the connection" is well defined.
 */
const pg = databases.find((db) => db.name === 'postgresql')!;
const Prepared = defineSessionEntity({ name: 'PreparedSession', tableName: 'prepared_session' });
const SELECT = /^select \* from "prepared_session" where "id" = \?$/;

/** The SQL drivers' EntityManager, which core's type doesn't declare. */
type SqlManager = { execute(sql: string): Promise<unknown> };

interface PgClient {
  query(text: string): Promise<{ rows: { name: string }[] }>;
  release(): void;
}

/** The koa-mikro-session statements prepared on the (only) connection of the ORM's pool: their SQL. */
async function prepared(h: Harness, pool?: unknown): Promise<string[]> {
  const native = (pool ?? (await h.orm.em.getConnection('write').getNativeClient())) as {
    connect(): Promise<PgClient>;
  };
  const client = await native.connect();
  try {
    const { rows } = await client.query(
      "select statement as name from pg_prepared_statements where name like 'koa_mikro_session_%' order by prepare_time",
    );
    return rows.map((row) => row.name.split(' ')[0].toLowerCase());
  } finally {
    client.release();
  }
}

describe.skipIf(pg.skip)("the session row's statements as pg named statements", () => {
  let h: Harness;
  const errors: unknown[] = [];
  beforeAll(async () => {
    h = await harness(pg, { entity: Prepared, orm: { pool: { min: 0, max: 1 } } });
    h.app.on('error', (error) => errors.push(error));
  });
  afterAll(() => h?.close());

  test('each statement is prepared once on the connection, and used after; the logger still shows it', async () => {
    const client = h.client();
    expect(await prepared(h)).toEqual([]);
    const created = await h.count(() => client.post('/set', { color: 'blue' }));
    expect(created).toEqual([
      expect.stringMatching(/^insert into "prepared_session" .* values \(\?, \?, \?, \?, \?\)$/),
    ]);
    expect(await prepared(h)).toEqual(['insert']);
    for (let i = 0; i < 3; i++) {
      const sql = await h.count(async () => expect((await client.get('/get?key=color')).json.value).toBe('blue'));
      expect(sql).toHaveLength(1);
      expect(sql[0]).toMatch(SELECT);
    }
    expect(await prepared(h)).toEqual(['insert', 'select']);
    for (let i = 0; i < 3; i++) await client.post('/set', { color: `blue ${i}`, list: [i, { i }], flag: i % 2 === 0 });
    expect((await client.get('/state')).json.data).toEqual({ color: 'blue 2', list: [2, { i: 2 }], flag: true });
    expect(await prepared(h)).toEqual(['insert', 'select', 'update']);
    await client.post('/invalidate', {});
    expect(await prepared(h)).toEqual(['insert', 'select', 'update', 'delete']);
    expect((await client.get('/get?key=color')).json.value).toBe(null);
  });

  test('a column added while the app runs: the read that meets the old plan still answers, the next prepares anew', async () => {
    const client = h.client();
    await client.post('/set', { color: 'green' });
    expect((await client.get('/get?key=color')).json.value).toBe('green');
    expect(await prepared(h)).toContain('select');
    const em = h.orm.em.fork();
    await (em as unknown as SqlManager).execute('alter table "prepared_session" add column "extra" int');
    try {
      // PostgreSQL refuses the cached plan (0A000, the result type changed): MikroORM's statement answers.
      expect((await client.get('/get?key=color')).json.value).toBe('green');
      expect((await client.get('/get?key=color')).json.value).toBe('green');
      // Prepared again under a new name (the failed one may be gone with its plan).
      // The named SELECT is in use again. (pg-pool closes a connection whose query failed, so the one that
      // met the old plan is gone with it, and the pool's new connection prepared the statement anew.)
      expect(await prepared(h)).toContain('select');
    } finally {
      await (em as unknown as SqlManager).execute('alter table "prepared_session" drop column "extra"');
    }
    expect((await client.get('/get?key=color')).json.value).toBe('green');
    expect(errors).toEqual([]);
  });

  test("a driver error comes out as MikroORM's own exception", async () => {
    const client = h.client();
    await client.post('/set', { color: 'red' });
    await (h.orm.em.fork() as unknown as SqlManager).execute(
      'alter table "prepared_session" rename to "prepared_session_away"',
    );
    try {
      expect((await client.get('/get?key=color')).status).toBe(500);
      expect(errors.at(-1)).toBeInstanceOf(TableNotFoundException);
    } finally {
      await (h.orm.em.fork() as unknown as SqlManager).execute(
        'alter table "prepared_session_away" rename to "prepared_session"',
      );
    }
    expect((await client.get('/get?key=color')).json.value).toBe('red');
  });
});

/** A session written, then read with one SELECT that nothing prepared on the connection of `pool` (the ORM's). */
async function expectMikroOrmsSelect(h: Harness, pool?: unknown): Promise<void> {
  const client = h.client();
  await client.post('/set', { color: 'blue' });
  const sql = await h.count(async () => expect((await client.get('/get?key=color')).json.value).toBe('blue'));
  expect(sql).toHaveLength(1);
  expect(sql[0]).toMatch(SELECT);
  expect(await prepared(h, pool)).toEqual([]);
}

describe.skipIf(pg.skip)("where the named statement can't be used, MikroORM's statement runs", () => {
  test("transaction: true: the request's transaction runs it on its own connection", async () => {
    const h = await harness(pg, {
      entity: Prepared,
      orm: { pool: { min: 0, max: 1 } },
      options: { transaction: true },
    });
    try {
      const client = h.client();
      await client.post('/set', { color: 'blue' });
      const sql = await h.count(async () => expect((await client.get('/get?key=color')).json.value).toBe('blue'));
      expect(sql.filter((statement) => SELECT.test(statement))).toHaveLength(1);
      expect(await prepared(h)).toEqual([]);
    } finally {
      await h.close();
    }
  });

  test("an onCreateConnection hook of the app's, which MikroORM runs on each connection it takes first", async () => {
    let hooked = 0;
    const h = await harness(pg, {
      entity: Prepared,
      orm: { pool: { min: 0, max: 1 }, onCreateConnection: async () => void hooked++ },
    });
    try {
      await expectMikroOrmsSelect(h);
      expect(hooked).toBe(1);
    } finally {
      await h.close();
    }
  });

  test('a native client that is not a pg pool (another driver, a changed MikroORM)', async () => {
    const h = await harness(pg, { entity: Prepared, orm: { pool: { min: 0, max: 1 } } });
    const connection = h.orm.em.getConnection('write');
    const pool = await connection.getNativeClient();
    connection.getNativeClient = async () => ({});
    try {
      await expectMikroOrmsSelect(h, pool);
    } finally {
      await h.close();
    }
  });
});
