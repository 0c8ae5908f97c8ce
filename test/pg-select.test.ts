import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  AbsoluteTimeout,
  ConfigurableCookie,
  Csrf,
  defineSessionEntity,
  IdleTimeout,
  RenewalTimeout,
  Userid,
} from '../src/index.js';
import { PgSelect, PgSelectUnsupported } from '../src/pg-select.js';
import { databases } from './support/databases.js';
import { harness, type Harness } from './support/app.js';

/**
 * The session's SELECT on PostgreSQL asks for its row description once per
 * connection (src/pg-select.ts): pg's own Query asks for it on every
 * execution. Seen here on the wire: pg's connection emits a `rowDescription`
 * for each description the server sends.
 */
const pg = databases.find((db) => db.name === 'postgresql')!;
const Described = defineSessionEntity({
  name: 'DescribedSession',
  tableName: 'described_session',
  features: [Userid, Csrf, IdleTimeout, AbsoluteTimeout, RenewalTimeout, ConfigurableCookie],
});

interface PgConnection {
  on(event: 'rowDescription', listener: () => void): void;
  removeListener(event: 'rowDescription', listener: () => void): void;
}
interface PgClient {
  connection: PgConnection;
  _types?: unknown;
  query<T>(query: unknown, values?: unknown[], callback?: (error: unknown, result: T) => void): Promise<T>;
  release(): void;
}
interface PgPool {
  connect(): Promise<PgClient>;
  query<T>(query: unknown): Promise<T>;
  on(event: 'acquire', listener: (client: PgClient) => void): void;
  removeListener(event: 'acquire', listener: (client: PgClient) => void): void;
}

/** A submittable run on one client: pg's client.query() answers the submittable itself, not a promise. */
const run = <T>(client: PgClient, select: PgSelect) =>
  new Promise<T>((resolve, reject) =>
    client.query(select, undefined, (error: unknown, result: T) => (error ? reject(error) : resolve(result))),
  );

const poolOf = async (h: Harness) => (await h.orm.em.getConnection('write').getNativeClient()) as PgPool;

/** Row descriptions the server sends to the ORM's pool, on whichever connection, while `fn` runs. */
async function descriptions(h: Harness, fn: () => Promise<unknown>): Promise<number> {
  const pool = await poolOf(h);
  let count = 0;
  const listener = () => void count++;
  const watched = new Set<PgConnection>();
  const watch = (client: PgClient) => {
    if (watched.has(client.connection)) return;
    watched.add(client.connection);
    client.connection.on('rowDescription', listener);
  };
  pool.on('acquire', watch);
  try {
    await fn();
  } finally {
    pool.removeListener('acquire', watch);
    for (const connection of watched) connection.removeListener('rowDescription', listener);
  }
  return count;
}

const featureRoutes = {
  'POST /login': (ctx: any, body: { userid: number }) => {
    ctx.session.userid = body.userid;
    return { ok: true };
  },
  'GET /all': (ctx: any) => ({
    userid: ctx.session.userid,
    csrf: ctx.session.getCsrfToken(),
    expiresAt: ctx.session.expiresAt,
    data: Object.fromEntries(ctx.session.entries()),
  }),
};

describe.skipIf(pg.skip)('the session SELECT on pg: described once per connection', () => {
  let h: Harness;
  const errors: unknown[] = [];
  beforeAll(async () => {
    h = await harness(pg, {
      entity: Described,
      orm: { pool: { min: 0, max: 1 } },
      options: { idleTimeout: 1800, absoluteTimeout: 7200, renewalTimeout: 600 },
      routes: featureRoutes,
    });
    h.app.on('error', (error) => errors.push(error));
  });
  afterAll(() => h?.close());

  test('of a login, a write and six reads on one connection, only the first SELECT is described', async () => {
    const client = h.client();
    const states: unknown[] = [];
    const described = await descriptions(h, async () => {
      await client.post('/login', { userid: 7 });
      await client.post('/set', { color: 'blue', list: [1, { two: 2 }], flag: true, none: null });
      for (let i = 0; i < 6; i++) states.push((await client.get('/all')).json);
    });
    expect(described).toBe(1);
    for (const state of states) expect(state).toEqual(states[0]);
    expect(states[0]).toMatchObject({
      data: { color: 'blue', list: [1, { two: 2 }], flag: true, none: null },
      userid: 7,
      csrf: expect.any(String),
      expiresAt: expect.any(String),
    });
    expect(errors).toEqual([]);
  });

  test('a write reads its row the same way, and keeps every feature column', async () => {
    const client = h.client();
    await client.post('/login', { userid: 8 });
    const before = (await client.get('/all')).json;
    const sent = await descriptions(h, async () => {
      for (let i = 0; i < 3; i++) await client.post('/set', { n: i });
    });
    expect(sent).toBe(0);
    const after = (await client.get('/all')).json;
    expect(after).toEqual({ ...before, data: { ...before.data, n: 2 } });
  });
});

describe.skipIf(pg.skip)('PgSelect against pg’s own Query, on a table of many column types', () => {
  let h: Harness;
  let client: PgClient;
  const text = 'select * from "pg_select_types" where "k" = $1 or $1 = \'all\' order by "k"';
  beforeAll(async () => {
    h = await harness(pg, { orm: { pool: { min: 0, max: 1 } } });
    client = await (await poolOf(h)).connect();
    await client.query('drop table if exists "pg_select_types"');
    await client.query(
      'create table "pg_select_types" ("k" text primary key, "i4" int, "i8" bigint, "num" numeric, "f8" float8, ' +
        '"b" boolean, "j" json, "jb" jsonb, "ts" timestamptz, "d" date, "arr" text[], "bytes" bytea, "t" text)',
    );
    await client.query(
      'insert into "pg_select_types" values (\'a\', 1, 9007199254740993, 1.50, 0.25, true, \'{"x":[1]}\', ' +
        "'{\"y\":{\"z\":null}}', '2026-12-05T10:00:00Z', '2026-12-05', '{a,\"b c\"}', '\\x0102', 'é'), " +
        "('b', null, null, null, null, null, null, null, null, null, null, null, null)",
    );
  });
  afterAll(async () => {
    await client?.query('drop table if exists "pg_select_types"');
    client?.release();
    await h?.close();
  });

  test('the same rows, values parsed by the client’s own type parsers (MikroORM’s), described or not', async () => {
    const theirs = await client.query<{ rows: unknown[] }>({ text, values: ['all'] });
    let described = 0;
    const listener = () => void described++;
    client.connection.on('rowDescription', listener);
    try {
      const first = await run<{ rows: unknown[]; rowCount: number }>(
        client,
        new PgSelect('pg_select_types_all', text, ['all']),
      );
      const second = await run<{ rows: unknown[]; rowCount: number }>(
        client,
        new PgSelect('pg_select_types_all', text, ['all']),
      );
      const one = await run<{ rows: unknown[] }>(client, new PgSelect('pg_select_types_all', text, ['a']));
      expect(described).toBe(1);
      expect(first.rows).toEqual(theirs.rows);
      expect(second.rows).toEqual(theirs.rows);
      expect(second.rowCount).toBe(2);
      expect(one.rows).toEqual([theirs.rows[0]]);
      // Key order too: as pg builds rows, in the columns' order.
      expect(Object.keys(second.rows[0] as object)).toEqual(Object.keys(theirs.rows[0] as object));
    } finally {
      client.connection.removeListener('rowDescription', listener);
    }
  });

  test('an error reaches the caller, and the connection stays usable', async () => {
    const failing = 'select 1 / (length($1) - 1) as "x"';
    await expect(run(client, new PgSelect('pg_select_div', failing, ['a']))).rejects.toThrow(/division by zero/);
    expect(await run<{ rows: unknown[] }>(client, new PgSelect('pg_select_div', failing, ['ab']))).toMatchObject({
      rows: [{ x: 1 }],
    });
    // The statement stays prepared; the run after an error describes it again, the next does not.
    let described = 0;
    const listener = () => void described++;
    client.connection.on('rowDescription', listener);
    try {
      await expect(run(client, new PgSelect('pg_select_div', failing, ['a']))).rejects.toThrow(/division by zero/);
      await run(client, new PgSelect('pg_select_div', failing, ['abc']));
      await run(client, new PgSelect('pg_select_div', failing, ['abcd']));
      expect(described).toBe(1);
    } finally {
      client.connection.removeListener('rowDescription', listener);
    }
  });

  test("a type parser that throws fails that query, as with pg's Query; the connection goes on", async () => {
    const types = client._types as {
      getTypeParser(oid: number, format: 'text'): (value: string) => unknown;
      setTypeParser(oid: number, format: 'text', parser: (value: string) => unknown): void;
    };
    const INT4 = 23;
    const parser = types.getTypeParser(INT4, 'text');
    const text = 'select "i4" from "pg_select_types" where "k" = $1';
    // The parsers are looked up when the statement is described: here, on its first run.
    types.setTypeParser(INT4, 'text', () => {
      throw new Error('the parser refused');
    });
    try {
      await expect(run(client, new PgSelect('pg_select_parser', text, ['a']))).rejects.toThrow('the parser refused');
    } finally {
      types.setTypeParser(INT4, 'text', parser);
    }
    // The failed run's shape is gone: the next run describes again, with the parser as it is now.
    expect(await run<{ rows: unknown[] }>(client, new PgSelect('pg_select_parser', text, ['a']))).toMatchObject({
      rows: [{ i4: 1 }],
    });
  });

  test('a name pg has prepared for another text is refused before anything is sent', async () => {
    await client.query({ name: 'pg_select_taken', text: 'select 1 as "one"', values: [] });
    await expect(run(client, new PgSelect('pg_select_taken', 'select 2 as "two"', []))).rejects.toThrow(
      /prepared for another text/,
    );
    expect(await client.query<{ rows: unknown[] }>('select 3 as "three"')).toMatchObject({ rows: [{ three: 3 }] });
  });
});

describe.skipIf(pg.skip)("where pg doesn't give a submittable its type parsers, pg's own Query reads the row", () => {
  test('PgSelect answers PgSelectUnsupported having sent nothing; the session reads as before, on Query', async () => {
    const h = await harness(pg, { entity: Described, orm: { pool: { min: 0, max: 1 } } });
    try {
      const pool = await poolOf(h);
      const browser = h.client();
      await browser.post('/set', { color: 'blue' });
      // As a pg that no longer hands its type parsers to query objects would leave its connection.
      const client = await pool.connect();
      client._types = undefined;
      client.release();
      const described = await descriptions(h, async () => {
        for (let i = 0; i < 3; i++) {
          const sql = await h.count(async () => expect((await browser.get('/get?key=color')).json.value).toBe('blue'));
          expect(sql).toHaveLength(1);
        }
      });
      // pg's Query, which describes every execution, read all three.
      expect(described).toBe(3);
    } finally {
      await h.close();
    }
  });

  test('submitted directly, it fails with PgSelectUnsupported', async () => {
    const h = await harness(pg, { orm: { pool: { min: 0, max: 1 } } });
    try {
      const client = await (await poolOf(h)).connect();
      const types = client._types;
      client._types = undefined;
      try {
        await expect(run(client, new PgSelect('pg_select_unsupported', 'select 1', []))).rejects.toBeInstanceOf(
          PgSelectUnsupported,
        );
        // Nothing was sent: the connection answers the next query.
        client._types = types;
        expect(await client.query<{ rows: unknown[] }>('select 1 as "one"')).toMatchObject({ rows: [{ one: 1 }] });
      } finally {
        client.release();
      }
    } finally {
      await h.close();
    }
  });
});
