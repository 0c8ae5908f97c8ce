import { TableNotFoundException, type EntityManager } from '@mikro-orm/core';
import { expect, test } from 'vitest';
import type { Harness } from './app.js';

/** The SQL that changes the session table under a running app, in the database's own dialect. */
export interface SchemaChanges {
  addColumn: string;
  dropColumn: string;
  /** Renames the table away, and back. */
  renameAway: string;
  renameBack: string;
}

type SqlManager = EntityManager & { execute(sql: string): Promise<unknown> };

/**
 * Tests every driver's kept statements pass alike (src/native-statements.ts):
 * the table changed while the app runs, and a driver error.  `running()`
 * gives the describe block's harness and the errors its app emitted.
 */
export function schemaChangeTests(running: () => { h: Harness; errors: unknown[] }, sql: SchemaChanges): void {
  const execute = (h: Harness, statement: string) => (h.orm.em.fork() as SqlManager).execute(statement);

  test('a column added and dropped while the app runs: the kept statements read and write the table as it is', async () => {
    const { h, errors } = running();
    const client = h.client();
    await client.post('/set', { color: 'green' });
    await execute(h, sql.addColumn);
    try {
      expect((await client.get('/get?key=color')).json.value).toBe('green');
      await client.post('/set', { color: 'teal' });
    } finally {
      await execute(h, sql.dropColumn);
    }
    expect((await client.get('/get?key=color')).json.value).toBe('teal');
    expect(errors).toEqual([]);
  });

  test("a driver error comes out as MikroORM's own exception", async () => {
    const { h, errors } = running();
    const client = h.client();
    await client.post('/set', { color: 'red' });
    await execute(h, sql.renameAway);
    try {
      expect((await client.get('/get?key=color')).status).toBe(500);
      expect(errors.at(-1)).toBeInstanceOf(TableNotFoundException);
    } finally {
      await execute(h, sql.renameBack);
    }
    expect((await client.get('/get?key=color')).json.value).toBe('red');
  });
}
