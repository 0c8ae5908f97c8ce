import { afterEach, describe, expect, test } from 'vitest';
import { databases } from './support/databases.js';
import { harness, type Harness } from './support/app.js';

/**
 * The app's MikroORM hooks see the session's own statements as they see the
 * app's: the library's prepared statements (src/native-statements.ts) step
 * aside where a hook would be bypassed.
 */
for (const db of databases) {
  describe.skipIf(db.skip)(`the app's MikroORM hooks on ${db.name}`, () => {
    let h: Harness | undefined;
    afterEach(async () => {
      await h?.close();
      h = undefined;
    });

    test("an onQuery hook (a tracing comment) is applied to every statement of the session's", async () => {
      h = await harness(db, { orm: { onQuery: (sql: string) => `${sql} /* traced */` } });
      const client = h.client();
      const sql = await h.count(async () => {
        await client.post('/set', { n: 1 });
        await client.post('/set', { n: 2 });
        expect((await client.get('/get?key=n')).json.value).toBe(2);
        await client.post('/invalidate', {});
      });
      expect(sql.map((statement) => statement.split(' ')[0].toLowerCase())).toEqual([
        'insert',
        'select',
        'update',
        'select',
        'select',
        'delete',
      ]);
      for (const statement of sql) expect(statement).toMatch(/ \/\* traced \*\/$/);
    });
  });
}
