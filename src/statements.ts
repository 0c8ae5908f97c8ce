import type {
  Connection,
  DatabaseDriver,
  EntityManager,
  EntityMetadata,
  EntityName,
  EntityProperty,
  MikroORM,
  Platform,
} from '@mikro-orm/core';
import type { SessionModel } from './entity.js';
import type { ColumnCondition } from './features/feature.js';
import type { SessionRow } from './types.js';
import { trustInternals } from './internals.js';
import { hooksAllowGoingAround, type NativeStatements } from './native-statements.js';
import { MySqlStatements } from './mysql-statements.js';
import { PgStatements } from './pg-statements.js';
import { SqliteStatements } from './sqlite-statements.js';

// The session row's own SQL, prepared once instead of built by MikroORM's
// query builder on every request (criteria, aliasing and SQL generation cost
// more CPU than the round trip itself on a loaded server).
//
// The SELECT is for entities of scalars and embeddables (no relation to
// load with the row); others get undefined and are loaded by findOne().  The
// writes (`writes`) also need a row MikroORM would write as the plain values
// it holds: no hook but the version bump, no generated, SQL-defaulted, lazy or
// version property, no type converted by SQL; otherwise MikroORM flushes the
// row.  Values are always converted by MikroORM itself (its snapshot), and
// columns named as its field mapping names them: only the SQL text is kept.
// The writes rely on MikroORM internals, checked once here (internals.ts): a
// MikroORM whose internals differ gets no prepared writes, and its row is
// flushed.

export class SessionStatements {
  /** `select * from <table> where <id> = ?` */
  readonly select: string;
  /**
   * These texts as the driver's own prepared statements (pg's, better-sqlite3's
   * or mysql2's); none where the app's hooks need MikroORM's path.
   */
  readonly native: NativeStatements | undefined;
  /** `delete from <table> where <id> = ?` */
  readonly delete: string;
  /** The row may be written with update() / insert() / delete instead of a flush. */
  readonly writes: boolean;
  readonly #platform: Platform;
  readonly #table: string;
  readonly #id: string;
  readonly #version: string;
  /** SQL texts by the columns they write (and, targeted, the conditions they check). */
  readonly #updates = new Map<string, string>();
  readonly #inserts = new Map<string, string>();
  readonly #targeted = new Map<string, string>();
  readonly #meta: EntityMetadata<SessionRow>;
  /** Column by property, for the properties MikroORM's field mapping only renames (see columnValues()). */
  readonly #columnOf: ReadonlyMap<string, string>;
  /** The SELECT's row may be made an entity by MikroORM's entity factory (internal) rather than em.map(). */
  readonly #factory: boolean;

  private constructor(
    platform: Platform,
    meta: EntityMetadata<SessionRow>,
    writes: boolean,
    factory: boolean,
    native: NativeStatements | undefined,
  ) {
    this.writes = writes;
    this.native = native;
    this.#factory = factory;
    this.#meta = meta;
    this.#columnOf = new Map(
      Object.entries(meta.properties)
        .filter(([, prop]) => renamedOnly(prop))
        .map(([name, prop]) => [name, prop.fieldNames[0]]),
    );
    this.#platform = platform;
    this.#table = platform.quoteIdentifier(meta.tableName);
    this.#id = platform.quoteIdentifier(meta.properties.id.fieldNames[0]);
    this.#version = platform.quoteIdentifier(meta.properties.version.fieldNames[0]);
    this.select = `select * from ${this.#table} where ${this.#id} = ?`;
    this.delete = `delete from ${this.#table} where ${this.#id} = ?`;
  }

  /** `ownHook`: SessionBase's version bump, the one hook the writes stand in for. */
  static prepare(orm: MikroORM, model: SessionModel, ownHook: unknown): SessionStatements | undefined {
    const { meta } = model;
    if (meta.schema || meta.inheritanceType || meta.discriminatorColumn || !columnsOnly(meta.props)) return undefined;
    const hooks = Object.entries(meta.hooks).filter(([, list]) => list?.length);
    const ownHooksOnly = hooks.every(
      ([event, list]) => event === 'beforeUpdate' && list.length === 1 && list[0] === ownHook,
    );
    const trusted = trustInternals(orm);
    const platform = orm.em.getPlatform();
    return new SessionStatements(
      platform,
      meta,
      ownHooksOnly && plainValues(meta.props) && trusted,
      trusted,
      hooksAllowGoingAround(orm.config) ? driverStatements(platform) : undefined,
    );
  }

  /**
   * A row of the SELECT as a managed entity of `em`, made as findOne() makes
   * its result: the driver's column-to-property mapping, then the entity
   * factory, which hydrates the entity and registers it with its snapshot.
   * em.map() does the same and then merges the entity a second time (its
   * snapshot taken again, cascading): about a quarter of what mapping costs.
   * The factory is internal; a MikroORM whose internals differ gets em.map().
   * Either way the row is registered even where the app's ORM disables the
   * identity map: the end of the request writes what that unit of work holds.
   */
  managed(em: EntityManager, row: Record<string, unknown>): SessionRow {
    const entity = this.#meta.class as EntityName<SessionRow>;
    if (!this.#factory) return em.map(entity, row, { disableIdentityMap: false });
    const data = em.getDriver().mapResult(row, this.#meta) as Record<string, unknown>;
    return em.getEntityFactory().create(entity, data, { merge: true, refresh: true, convertCustomTypes: true });
  }

  /** The columns and values an INSERT or UPDATE of `data` (a snapshot, or its changes) writes. */
  columnValues(em: EntityManager, data: Record<string, unknown>): { columns: string[]; values: unknown[] } {
    // What MikroORM's field mapping gives without type conversion (the snapshot's values are converted
    // already).  For a property of one plain column that mapping only renames the key, so the column is
    // looked up here: the mapping copies the data and renames it key by key, about 4 % of a new session's
    // work in-process, 1 % over HTTP (BENCHMARKS.md, Issue 12, seventh step).  Any other key sends the
    // whole of `data` to the mapping.
    const columns: string[] = [];
    const values: unknown[] = [];
    for (const key in data) {
      const column = this.#columnOf.get(key);
      if (column === undefined) return mappedValues(em, this.#meta, data);
      columns.push(column);
      values.push(data[key]);
    }
    return { columns, values };
  }

  /** `update <table> set <columns> = ? where <id> = ? and <version> = ?`; `columns` include the version. */
  update(columns: readonly string[]): string {
    return cached(
      this.#updates,
      columns.join('\0'),
      () => `update ${this.#table} set ${this.#assignments(columns)} where ${this.#id} = ? and ${this.#version} = ?`,
    );
  }

  /** `insert into <table> (<columns>) values (?, ...)` */
  insert(columns: readonly string[]): string {
    return cached(this.#inserts, columns.join('\0'), () => {
      const list = columns.map((column) => this.#platform.quoteIdentifier(column)).join(', ');
      return `insert into ${this.#table} (${list}) values (${columns.map(() => '?').join(', ')})`;
    });
  }

  /**
   * `update <table> set <columns> = ? where <id> = ? and <conditions>` for one
   * embedded feature's columns, values converted by MikroORM's field mapping.
   * Runs on its own (outside the unit of work, like em.nativeUpdate()).
   */
  async updateColumns(
    em: EntityManager,
    id: string,
    property: string,
    expect: Record<string, ColumnCondition>,
    values: Record<string, unknown>,
  ): Promise<{ affectedRows: number }> {
    let statement: { sql: string; params: unknown[] };
    try {
      statement = this.#targetedUpdate(em, id, property, expect, values);
    } catch (error) {
      // A TypeError out of MikroORM's field mapping (an internal whose behaviour changed) comes before
      // anything is sent: MikroORM's own statement makes the same conditional update instead.
      if (!(error instanceof TypeError)) throw error;
      const where = { id, [property]: expect } as never;
      const affectedRows = await em.nativeUpdate(this.#meta.class as EntityName<SessionRow>, where, {
        [property]: values,
      } as never);
      return { affectedRows };
    }
    return (
      (await this.native?.write(em, statement.sql, statement.params)) ??
      em
        .getConnection('write')
        .execute<{ affectedRows: number }>(statement.sql, statement.params, 'run', em.getTransactionContext())
    );
  }

  /** The SQL and parameters of updateColumns(); sends nothing. */
  #targetedUpdate(
    em: EntityManager,
    id: string,
    property: string,
    expect: Record<string, ColumnCondition>,
    values: Record<string, unknown>,
  ): { sql: string; params: unknown[] } {
    const driver = em.getDriver() as unknown as DatabaseDriver<Connection>;
    const map = (data: Record<string, unknown>) =>
      driver.mapDataToFieldNames({ [property]: data }, true, this.#meta.properties, true);
    const set = map(values);
    const columns = Object.keys(set);
    const params = columns.map((column) => set[column]);
    params.push(id);
    const comparisons: Comparison[] = [];
    for (const [key, condition] of Object.entries(expect)) {
      const lessThan = typeof condition === 'object' && condition !== null && '$lt' in condition;
      const value = lessThan ? (condition as { $lt: unknown }).$lt : condition;
      const [[column, converted]] = Object.entries(map({ [key]: value }));
      comparisons.push([column, value === null ? 'is null' : lessThan ? '<' : '=']);
      if (value !== null) params.push(converted);
    }
    const key = `${columns.join('\0')}\n${comparisons.map((c) => c.join(' ')).join('\0')}`;
    const sql = cached(this.#targeted, key, () => {
      const where = comparisons.map(([column, operator]) => {
        const quoted = this.#platform.quoteIdentifier(column);
        return operator === 'is null' ? `${quoted} is null` : `${quoted} ${operator} ?`;
      });
      return (
        `update ${this.#table} set ${this.#assignments(columns)} where ` +
        `${[`${this.#id} = ?`, ...where].join(' and ')}`
      );
    });
    return { sql, params };
  }

  /** `a = ?, b = ?` */
  #assignments(columns: readonly string[]): string {
    return columns.map((column) => `${this.#platform.quoteIdentifier(column)} = ?`).join(', ');
  }
}

/** A SQL text built once per key.  Keys are sets of columns of one table: finite, and few in practice. */
function cached(texts: Map<string, string>, key: string, build: () => string): string {
  let sql = texts.get(key);
  if (sql === undefined) texts.set(key, (sql = build()));
  return sql;
}

/**
 * A property that DatabaseDriver.mapDataToFieldNames(), without type
 * conversion, writes to its one column as it is: a scalar (an embeddable's
 * inline fields are scalars of their own), not a relation or a polymorphic
 * one, not converted by SQL.
 */
function renamedOnly(prop: EntityProperty): boolean {
  return (
    prop.kind === 'scalar' &&
    prop.fieldNames?.length === 1 &&
    !prop.embeddedProps &&
    !prop.joinColumns &&
    !prop.polymorphic &&
    !prop.hasConvertToDatabaseValueSQL
  );
}

/** columnValues() by MikroORM's field mapping itself (internal: every SQL driver inherits it from DatabaseDriver). */
function mappedValues(
  em: EntityManager,
  meta: EntityMetadata<SessionRow>,
  data: Record<string, unknown>,
): { columns: string[]; values: unknown[] } {
  const driver = em.getDriver() as unknown as DatabaseDriver<Connection>;
  const fields = driver.mapDataToFieldNames(data, true, meta.properties, false);
  const columns = Object.keys(fields);
  return { columns, values: columns.map((column) => fields[column]) };
}

/** A column of a targeted UPDATE's WHERE clause, and how it is compared. */
type Comparison = readonly [column: string, operator: '=' | '<' | 'is null'];

/** Scalars and embeddables only, read as stored: `select *` is all there is to load. */
function columnsOnly(props: readonly EntityProperty[]): boolean {
  return props.every((prop) =>
    prop.kind === 'embedded'
      ? columnsOnly(prop.targetMeta?.props ?? [])
      : prop.kind === 'scalar' && !prop.hasConvertToJSValueSQL,
  );
}

/** Properties MikroORM writes as the values it holds, nothing computed around them. */
function plainValues(props: readonly EntityProperty[]): boolean {
  return props.every((prop) => {
    if (prop.kind === 'embedded') return plainValues(prop.targetMeta?.props ?? []);
    return (
      !prop.onCreate &&
      !prop.onUpdate &&
      !prop.generated &&
      !prop.formula &&
      !prop.version &&
      !prop.lazy &&
      prop.persist !== false &&
      prop.defaultRaw === undefined &&
      !prop.hasConvertToDatabaseValueSQL
    );
  });
}

/** The driver's own prepared statements for this platform, if the library has them. */
function driverStatements(platform: Platform): NativeStatements | undefined {
  if (isPostgreSql(platform)) return new PgStatements();
  if (isPlatform(platform, 'SqlitePlatform')) return new SqliteStatements();
  if (isPlatform(platform, 'BaseMySqlPlatform')) return new MySqlStatements();
  return undefined;
}

/** The platform `name`, or one built on it, by class name: the driver packages are optional peers. */
function isPlatform(platform: Platform, name: string): boolean {
  for (
    let c = platform.constructor;
    typeof c === 'function' && c !== Function.prototype;
    c = Object.getPrototypeOf(c)
  ) {
    if (c.name === name) return true;
  }
  return false;
}

/** PostgreSQL's platform, or one built on it. */
export function isPostgreSql(platform: Platform): boolean {
  return isPlatform(platform, 'BasePostgreSqlPlatform');
}
