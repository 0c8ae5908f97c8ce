/**
 * The columns the end-of-request write names (statements.ts columnValues()):
 * a property of one plain column is looked up, anything else goes through
 * MikroORM's field mapping.  Either way the columns and values must be
 * exactly what that mapping gives, or the row is written to the wrong
 * columns.
 */
import { afterEach, describe, expect, test } from 'vitest';
import {
  defineEntity,
  p,
  type Connection,
  type DatabaseDriver,
  type EntityManager,
  type EntityName,
  type MikroORM,
} from '@mikro-orm/core';
import {
  AbsoluteTimeout,
  ConfigurableCookie,
  Csrf,
  defineSessionEntity,
  IdleTimeout,
  RenewalTimeout,
  SessionBase,
  Userid,
} from '../src/index.js';
import { bumpVersion, inspectSessionEntity } from '../src/entity.js';
import { SessionStatements } from '../src/statements.js';
import { databases } from './support/databases.js';
import { harness, type Harness } from './support/app.js';

const Plain = defineSessionEntity({ name: 'ColumnsPlain', tableName: 'columns_plain' });
const Featured = defineSessionEntity({
  name: 'ColumnsFeatured',
  tableName: 'columns_featured',
  features: [Userid, Csrf, IdleTimeout, AbsoluteTimeout, RenewalTimeout, ConfigurableCookie],
});
const Preferences = defineEntity({
  name: 'ColumnsPreferences',
  embeddable: true,
  properties: { theme: p.string().nullable(), size: p.integer().nullable() },
});
/** A hand-written session entity whose columns are named apart from its properties. */
const HandWritten = defineEntity({
  name: 'ColumnsHandWritten',
  tableName: 'columns_hand_written',
  extends: SessionBase,
  properties: {
    label: p.string().fieldName('the_label').nullable(),
    preferences: () => p.embedded(Preferences).prefix('pref_').nullable(),
  },
});
/**
 * The embeddable stored whole in one JSON column: MikroORM writes such a row
 * itself (its fields are not persisted one by one), and its key is no plain
 * column, so columnValues() hands it to MikroORM's field mapping.
 */
const JsonColumn = defineEntity({
  name: 'ColumnsJsonColumn',
  tableName: 'columns_json_column',
  extends: SessionBase,
  properties: { preferences: () => p.embedded(Preferences).object().nullable() },
});

/** What MikroORM's own field mapping gives for `data`, as columns and values. */
function mapped(em: EntityManager, meta: { properties: any }, data: Record<string, unknown>) {
  const driver = em.getDriver() as unknown as DatabaseDriver<Connection>;
  const fields = driver.mapDataToFieldNames(data, true, meta.properties, false);
  return { columns: Object.keys(fields), values: Object.values(fields) };
}

for (const db of databases) {
  describe.skipIf(db.skip)(`the columns of the session row's writes on ${db.name}`, () => {
    let orm: MikroORM | undefined;
    let h: Harness | undefined;
    afterEach(async () => {
      await orm?.close(true);
      await h?.close();
      orm = h = undefined;
    });

    test.each<[string, EntityName<any>, Record<string, unknown>, boolean]>([
      ['the default entity', Plain, {}, true],
      ['an entity with every feature', Featured, {}, true],
      ['a hand-written entity', HandWritten, { label: 'a', preferences: { theme: 'dark', size: 3 } }, true],
      ['an embeddable in one JSON column', JsonColumn, { preferences: { theme: 'dark', size: 3 } }, false],
    ])('%s: what MikroORM field mapping gives, for an INSERT and an UPDATE', async (_, entity, own, writes) => {
      orm = await db.init([entity], []);
      const model = inspectSessionEntity(orm, entity);
      const statements = SessionStatements.prepare(orm, model, bumpVersion)!;
      expect(statements.writes).toBe(writes);
      const em = orm.em.fork();
      const values: Record<string, unknown> = { id: 'a'.repeat(64), created: 1, version: 1, data: { n: 1 }, flash: {} };
      for (const { property } of model.features) values[property] = {};
      const row = em.create(entity, { ...values, ...own }, { persist: false });
      const snapshot = em.getComparator().prepareEntity(row) as Record<string, unknown>;
      const insert = statements.columnValues(em, snapshot);
      expect(insert).toEqual(mapped(em, model.meta, snapshot));
      expect(insert.columns.length).toBeGreaterThanOrEqual(5);
      // An UPDATE's changes: some of the keys, the entity's own last.
      const { data, version, ...rest } = snapshot;
      const changes = { data, version, ...Object.fromEntries(Object.entries(rest).slice(-2)) };
      expect(statements.columnValues(em, changes)).toEqual(mapped(em, model.meta, changes));
    });

    test('a hand-written entity: its renamed columns are written and read back', async () => {
      h = await harness(db, {
        entity: HandWritten,
        routes: {
          'POST /label': async (ctx, body: any) => {
            ctx.session.set('n', body.label);
            // The request's own row: loaded with the session, so the identity map answers.
            const row: any = await ctx.em.findOneOrFail(HandWritten, { id: ctx.session.id });
            row.label = body.label;
            row.preferences = { theme: body.label, size: 2 };
            return { ok: true };
          },
        },
      });
      const client = h.client();
      await client.post('/set', { n: 0 });
      // The row alone changed: its prepared UPDATE, with the columns columnValues() named.
      const sql = await h.count(() => client.post('/label', { label: 'second' }));
      expect(sql.map((statement) => statement.split(' ')[0].toLowerCase())).toEqual(['select', 'update']);
      expect(sql[1]).toContain('the_label');
      const [stored] = await h.orm.em
        .fork()
        .getConnection()
        .execute(`select the_label, pref_theme, pref_size from columns_hand_written`);
      expect(stored).toEqual({ the_label: 'second', pref_theme: 'second', pref_size: 2 });
    });
  });
}
