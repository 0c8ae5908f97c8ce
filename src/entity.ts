import { defineEntity, EntitySchema, p, type EntityMetadata, type EntityName, type MikroORM } from '@mikro-orm/core';
import { ConfigurationError } from './errors.js';
import type { EmbeddedFeature, Feature } from './features/feature.js';
import { featureOf } from './features/index.js';
import { SESSION_ID_LENGTH } from './token.js';
import type { SessionRow } from './types.js';

/**
 * The values a row holds for the feature embedded under `property`: the one
 * place where the row is indexed by a property known only at run time.
 */
export function embeddedIn(row: SessionRow, property: string): any {
  return (row as unknown as Record<string, unknown>)[property];
}

/**
 * Optimistic locking, done by hand rather than with MikroORM's version
 * property: a version property makes drivers without UPDATE ... RETURNING
 * (MariaDB) read the new version back with an extra SELECT after every write.
 * Bumping it here, only when MikroORM found a change, keeps one statement.
 */
export function bumpVersion({ entity }: { entity: SessionRow }): void {
  entity.version++;
}

/**
 * The abstract base a hand-written session entity extends:
 * `defineEntity({ name: 'AppSession', extends: SessionBase, properties: { ... } })`.
 */
export const SessionBase: EntitySchema<SessionRow> = defineEntity({
  name: 'SessionBase',
  abstract: true,
  properties: {
    id: p.string().primary().length(SESSION_ID_LENGTH),
    created: p.bigint('number'),
    version: p.integer().concurrencyCheck(),
    data: p.json<Record<string, unknown>>(),
    flash: p.json<Record<string, unknown[]>>(),
  },
  hooks: { beforeUpdate: [bumpVersion] },
});

// A decorated `class AppSession extends SessionBase.class` reaches SessionBase only through its
// prototype chain, and MikroORM looks such a base class up in EntitySchema.REGISTRY. defineEntity()
// without a `class` option generates SessionBase.class without registering it, so the base was
// discovered as an empty class and MikroORM.init() failed with "AppSession entity is missing
// @PrimaryKey()", unless SessionBase was listed in `entities` as well. setClass() registers it.
SessionBase.setClass(SessionBase.class);

export interface SessionEntityOptions {
  /** Entity name, 'Session' by default. */
  name?: string;
  /** Table name, 'session' by default. */
  tableName?: string;
  /** Feature embeddables to opt into: Userid, Csrf, IdleTimeout, ConfigurableIdleTimeout, ... */
  features?: readonly unknown[];
}

/** A session entity's schema; its rows have at least the base columns. */
export type SessionEntity = EntitySchema<SessionRow & Record<string, any>, SessionRow>;

/** The one-line way: a session entity with the base columns and the chosen features. */
export function defineSessionEntity(options: SessionEntityOptions = {}): SessionEntity {
  const properties: Record<string, any> = {};
  const claimed = new Map<string, Feature<any>>();
  for (const embeddable of options.features ?? []) {
    const feature = featureOf(embeddable);
    if (!feature)
      throw new ConfigurationError(
        `defineSessionEntity: ${describe(embeddable)} is not a koa-mikro-session feature embeddable`,
      );
    const other = claimed.get(feature.property);
    if (other === feature)
      throw new ConfigurationError(`defineSessionEntity: the ${feature.name} feature is listed twice`);
    if (other) {
      throw new ConfigurationError(
        `defineSessionEntity: ${other.name} and ${feature.name} are both listed: keep one (a configurable variant ` +
          `includes its plain feature)`,
      );
    }
    claimed.set(feature.property, feature);
    properties[feature.property] = () => p.embedded(embeddable as any).prefix(false);
  }
  return defineEntity({
    name: options.name ?? 'Session',
    tableName: options.tableName ?? 'session',
    extends: SessionBase,
    properties,
  }) as unknown as SessionEntity;
}

/** What the middleware needs to know about a session entity, read once from the ORM's metadata. */
export interface SessionModel {
  readonly meta: EntityMetadata<SessionRow>;
  /** Embedded features, with the property each lives under. */
  readonly features: readonly EmbeddedFeature[];
}

const REQUIRED: [keyof SessionRow, (prop: any) => boolean, string][] = [
  ['id', (prop) => prop.primary, 'the primary key'],
  ['created', (prop) => prop.kind === 'scalar', 'a scalar column'],
  ['version', (prop) => prop.concurrencyCheck, 'the concurrency-check version column'],
  ['data', (prop) => prop.kind === 'scalar', 'a JSON column'],
  ['flash', (prop) => prop.kind === 'scalar', 'a JSON column'],
];

export function inspectSessionEntity(orm: MikroORM, entity: EntityName<object>): SessionModel {
  // find() would also answer for a schema the ORM never discovered: ask has() first.
  const metadata = orm.getMetadata();
  const cls = EntitySchema.is(entity) ? entity.meta.class : entity;
  const meta = metadata.has(cls) ? (metadata.get(cls) as EntityMetadata<SessionRow>) : undefined;
  if (!meta) {
    throw new ConfigurationError(
      `entity ${describe(entity)} is not known to this MikroORM instance: add it to the entities of MikroORM.init()`,
    );
  }
  for (const [name, check, what] of REQUIRED) {
    const prop = meta.properties[name];
    if (!prop || !check(prop)) {
      throw new ConfigurationError(
        `entity ${meta.className} is not a session entity: ${name} must be ${what}. ` +
          'Build it with defineSessionEntity(), or extend SessionBase: defineEntity({ extends: SessionBase, ... }), ' +
          'or with decorators class ... extends SessionBase.class',
      );
    }
  }
  if (!meta.hooks.beforeUpdate?.includes(bumpVersion as any)) {
    throw new ConfigurationError(
      `entity ${meta.className} is not a session entity: it must extend SessionBase (defineEntity({ extends: ` +
        `SessionBase }) or class ... extends SessionBase.class), whose hook keeps its version`,
    );
  }
  if (meta.primaryKeys.length !== 1)
    throw new ConfigurationError(
      `entity ${meta.className} is not a session entity: it must have the single primary key id`,
    );
  const features: EmbeddedFeature[] = [];
  for (const prop of Object.values(meta.properties)) {
    if (prop.kind !== 'embedded') continue;
    const feature = featureOf(prop.embeddable);
    if (!feature) continue;
    const base = (f: Feature<any>) => f.includes ?? f;
    const twin = features.find((other) => base(other.feature) === base(feature));
    if (twin)
      throw new ConfigurationError(
        `entity ${meta.className} embeds ${twin.feature.name} and ${feature.name}: keep one (a configurable variant ` +
          `includes its plain feature)`,
      );
    features.push({ feature, property: prop.name as string });
  }
  return { meta, features };
}

// Lets the session entity's columns be plain data properties of each row.
//
// Under MikroORM's default `propagationOnPrototype: true`, an entity's
// prototype has a setter for every scalar and embedded property.  The first
// assignment of each property on an instance (the hydrator's, em.create()'s)
// runs it, and it defines a getter and a setter on the instance that keep the
// value in the entity's WrappedEntity: four Object.defineProperty() calls per
// row for the base columns alone, and instances whose shape every later access
// pays for.  Without them the library does 8–10 % fewer instructions per
// request that loads or creates a row (BENCHMARKS.md, issue 12, eighth step).
// MikroORM needs those instance accessors only for relations with an inverse
// side, whose assignments it propagates; for a scalar or an embeddable nothing
// reads the kept value but the accessor itself, and an entity whose class
// fields are defined by its constructor (TypeScript's useDefineForClassFields)
// never has them.  So, for the session entity only, a writable `undefined` on its
// prototype shadows each such setter: an assignment then makes an own data
// property, as with `propagationOnPrototype: false`.
//
// Only a setter of MikroORM's shape (no getter, configurable) on a property
// MikroORM would have given one is shadowed; anything else, the app's own
// accessors included, is left as it is.  Another MikroORM.init() over the same
// classes puts the setters back: rows are then as MikroORM makes them, only
// slower.
/** Shadows MikroORM's per-instance setters on the session entity's prototype; returns the properties shadowed. */
export function plainColumns(meta: EntityMetadata<SessionRow>): string[] {
  const prototype = meta.prototype as object | undefined;
  if (!prototype) return [];
  const shadowed: string[] = [];
  for (const prop of meta.props) {
    const kind = prop.kind as string;
    if (kind !== 'scalar' && kind !== 'embedded') continue;
    if (prop.primary || prop.embedded || prop.persist === false || prop.accessor || prop.getter || prop.setter)
      continue;
    const setter = inheritedDescriptor(prototype, prop.name);
    if (!setter || setter.get || typeof setter.set !== 'function' || !setter.configurable) continue;
    Object.defineProperty(prototype, prop.name, { value: undefined, writable: true, configurable: true });
    shadowed.push(prop.name);
  }
  return shadowed;
}

/** The descriptor of `name` on `object` or the nearest prototype that has it. */
function inheritedDescriptor(object: object | null, name: string): PropertyDescriptor | undefined {
  for (; object !== null && object !== Object.prototype; object = Object.getPrototypeOf(object)) {
    const descriptor = Object.getOwnPropertyDescriptor(object, name);
    if (descriptor) return descriptor;
  }
  return undefined;
}

function describe(thing: unknown): string {
  if (typeof thing === 'function') return thing.name || 'an anonymous class';
  if (thing && typeof thing === 'object' && 'meta' in thing)
    return String((thing as any).meta?.className ?? (thing as any).meta?.name);
  return String(thing);
}
