import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineEntity, p } from '@mikro-orm/core';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { defineSessionEntity, SessionBase } from '../src/index.js';
import { databases } from './support/databases.js';
import { harness, type Harness, type HarnessOptions } from './support/app.js';
import { schemaChangeTests } from './support/native-statements.js';

/**
 * On SQLite the session row's own statements (its SELECT, and the INSERT,
 * UPDATE and DELETE of the end-of-request write) are better-sqlite3 statements
 * compiled once and kept (src/sqlite-statements.ts), wherever MikroORM would
 * run the same statement on the one connection.  MikroORM's path formats the
 * values into a new text that SQLite compiles every time; these tests watch
 * what the real database compiles (Database#prepare) to tell the two apart.
 */
const sqlite = databases.find((db) => db.name === 'sqlite')!;
const Kept = defineSessionEntity({ name: 'KeptSession', tableName: 'kept_session' });
/** A hand-written session entity with a boolean column, a value better-sqlite3 does not bind. */
const Flagged = defineEntity({
  name: 'FlaggedSession',
  tableName: 'flagged_session',
  extends: SessionBase,
  properties: { trusted: p.boolean().nullable() },
});

interface Database {
  prepare(sql: string): unknown;
  inTransaction: boolean;
}

/**
 * Records the texts the ORM's database compiles from now on (the real
 * prepare() still runs): the kept statements' texts have `?` placeholders,
 * MikroORM's formatted ones carry the values.
 */
async function compiled(h: Harness): Promise<{ texts: string[]; verbs: () => string[] }> {
  const database = (await h.orm.em.getConnection('write').getNativeClient()) as Database;
  const prepare = database.prepare;
  const texts: string[] = [];
  database.prepare = function (this: Database, sql: string) {
    texts.push(sql);
    return prepare.call(this, sql);
  };
  const session = (sql: string) => /[`"](kept|flagged)_session[`"]/.test(sql);
  return { texts, verbs: () => texts.filter(session).map((sql) => sql.split(' ')[0].toLowerCase()) };
}

describe.skipIf(sqlite.skip)("the session row's statements as kept better-sqlite3 statements", () => {
  let h: Harness;
  const errors: unknown[] = [];
  beforeAll(async () => {
    h = await harness(sqlite, { entity: Kept });
    h.app.on('error', (error) => errors.push(error));
  });
  afterAll(() => h?.close());

  test('each statement is compiled once, and kept; the logger still shows it', async () => {
    const { texts, verbs } = await compiled(h);
    const client = h.client();
    const created = await h.count(() => client.post('/set', { color: 'blue' }));
    expect(created).toEqual([expect.stringMatching(/^insert into `kept_session` .* values \(\?, \?, \?, \?, \?\)$/)]);
    for (let i = 0; i < 3; i++) {
      const sql = await h.count(async () => expect((await client.get('/get?key=color')).json.value).toBe('blue'));
      expect(sql).toEqual(['select * from `kept_session` where `id` = ?']);
    }
    for (let i = 0; i < 3; i++) await client.post('/set', { color: `blue ${i}`, list: [i, { i }], flag: i % 2 === 0 });
    expect((await client.get('/state')).json.data).toEqual({ color: 'blue 2', list: [2, { i: 2 }], flag: true });
    await client.post('/invalidate', {});
    expect((await client.get('/get?key=color')).json.value).toBe(null);
    expect(verbs()).toEqual(['insert', 'select', 'update', 'delete']);
    expect(texts.filter((sql) => sql.includes('kept_session')).every((sql) => !sql.includes('blue'))).toBe(true);
    expect(errors).toEqual([]);
  });

  schemaChangeTests(() => ({ h, errors }), {
    addColumn: 'alter table `kept_session` add column `extra` integer',
    dropColumn: 'alter table `kept_session` drop column `extra`',
    renameAway: 'alter table `kept_session` rename to `kept_session_away`',
    renameBack: 'alter table `kept_session_away` rename to `kept_session`',
  });
});

describe.skipIf(sqlite.skip)("where a kept statement can't be used, MikroORM's statement runs", () => {
  let h: Harness | undefined;
  let folder: string | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    if (folder) rmSync(folder, { recursive: true, force: true });
    folder = undefined;
  });

  const start = async (options: HarnessOptions = {}) => (h = await harness(sqlite, { entity: Kept, ...options }));

  test("transaction: true: the request's transaction runs it, compiled with its values", async () => {
    const h = await start({ options: { transaction: true } });
    const client = h.client();
    await client.post('/set', { color: 'blue' });
    const { verbs } = await compiled(h);
    for (let i = 0; i < 2; i++) expect((await client.get('/get?key=color')).json.value).toBe('blue');
    expect(verbs()).toEqual(['select', 'select']);
  });

  test("an onCreateConnection hook of the app's, which MikroORM runs on the connection first: MikroORM's statements", async () => {
    let hooked = 0;
    const h = await start({ orm: { onCreateConnection: async () => void hooked++ } });
    const client = h.client();
    await client.post('/set', { color: 'blue' });
    const { verbs } = await compiled(h);
    for (let i = 0; i < 2; i++) expect((await client.get('/get?key=color')).json.value).toBe('blue');
    expect(verbs()).toEqual(['select', 'select']);
    expect(hooked).toBe(1);
  });

  test("another request's open transaction: the statement waits for it, and is not rolled back with it", async () => {
    const h = await start();
    const client = h.client();
    await client.post('/set', { n: 1 });
    // A transaction of the app's, open on the one connection while this client's request runs.
    const app = h.orm.em.fork();
    await app.begin();
    const database = (await h.orm.em.getConnection('write').getNativeClient()) as Database;
    expect(database.inTransaction).toBe(true);
    // MikroORM's path is taken (and waits for the connection): seen as its connection.execute() being called.
    const connection = h.orm.em.getConnection('write') as { execute: (...args: unknown[]) => Promise<unknown> };
    const execute = connection.execute;
    let waiting!: () => void;
    const tookMikroOrmsPath = new Promise<string>((resolve) => (waiting = () => resolve('waits')));
    connection.execute = function (this: unknown, ...args: unknown[]) {
      if (String(args[0]).startsWith('select * from `kept_session`')) waiting();
      return execute.apply(this, args);
    };
    try {
      const write = client.post('/set', { n: 2 });
      // Had the statements joined the open transaction, the request would answer before it ends.
      expect(await Promise.race([tookMikroOrmsPath, write.then(() => 'answered')])).toBe('waits');
      await app.rollback();
      expect((await write).status).toBe(200);
    } finally {
      connection.execute = execute;
    }
    expect((await client.get('/get?key=n')).json.value).toBe(2);
  });

  test('a value better-sqlite3 would not bind (a boolean of a hand-written entity): MikroORM writes it', async () => {
    const h = await start({
      entity: Flagged,
      routes: {
        'POST /trust': async (ctx) => {
          ctx.session.set('trusted', true);
          const row = await ctx.em.findOneOrFail(Flagged, { id: ctx.session.id });
          row.trusted = true;
          return { ok: true };
        },
      },
    });
    const client = h.client();
    await client.post('/set', { n: 1 });
    const { verbs } = await compiled(h);
    expect((await client.post('/trust', {})).status).toBe(200);
    // The UPDATE with the boolean compiled with its values by MikroORM's path, the kept SELECT the first time.
    expect(verbs()).toEqual(['select', 'update']);
    // A later write of plain values takes the kept statements: the kept UPDATE is compiled, the SELECT was.
    await client.post('/set', { n: 2 });
    expect(verbs()).toEqual(['select', 'update', 'update']);
    const id = (await client.get('/state')).json.id;
    expect(await h.orm.em.fork().findOneOrFail(Flagged, { id })).toMatchObject({
      trusted: true,
      data: { n: 2, trusted: true },
    });
  });

  test('the database closed and opened again (orm.close(), orm.connect()): statements are kept for the new one', async () => {
    folder = mkdtempSync(join(tmpdir(), 'kms-sqlite-'));
    const h = await start({ orm: { dbName: join(folder, 'sessions.db') } });
    const client = h.client();
    await client.post('/set', { color: 'blue' });
    expect((await client.get('/get?key=color')).json.value).toBe('blue');
    await h.orm.close();
    await h.orm.connect();
    const { verbs } = await compiled(h);
    for (let i = 0; i < 3; i++) expect((await client.get('/get?key=color')).json.value).toBe('blue');
    await client.post('/set', { color: 'green' });
    expect((await client.get('/get?key=color')).json.value).toBe('green');
    // The first read after the reopening takes MikroORM's path; the next compile the kept SELECT once.
    expect(verbs()).toEqual(['select', 'select', 'update']);
  });
});
