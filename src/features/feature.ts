import type { EntityClass } from '@mikro-orm/core';
import type { SessionContext } from '../context.js';
import type { SettingName } from '../settings.js';

/** Why a loaded session is not valid: it expired, or its cookie was copied. */
export type Invalidity = 'idle' | 'absolute' | 'renewal-violation';

/**
 * A feature is one embeddable class plus the behaviour the middleware runs
 * for it.  Each feature lives in one module of this folder and registers
 * itself here; the middleware only ever iterates over the features the
 * session entity embeds, so an absent feature costs nothing.
 */
export interface Feature {
  /** The embeddable's name, used in messages: 'IdleTimeout'. */
  readonly name: string;
  /** The property defineSessionEntity embeds it under (its columns carry no prefix). */
  readonly property: string;
  /** The embeddable class; a subclass found in the entity's metadata matches too. */
  readonly embeddable: EntityClass<object>;
  /** For a configurable variant: the plain feature it includes. */
  readonly includes?: Feature;
  /** Settings that need this feature (or a variant of it) when they are set. */
  readonly settings?: readonly SettingName[];
  /** Settings a session may change: the embeddable has a column for each. */
  readonly configurable?: readonly SettingName[];
  /** The embeddable class to embed to make `settings` configurable per session. */
  readonly configurableAs?: string;
  /** Whether the embedded values are session data (they make a new session dirty). */
  holdsData?(embedded: any): boolean;
  /** Initial values of a new session. */
  create?(embedded: any, context: SessionContext): void;
  /** After loading a row: why it is not valid, if it is not (it is then deleted). */
  verify?(embedded: any, context: SessionContext): Invalidity | undefined;
  /** The time (ms) this feature ends the session at, or null. */
  expiresAt?(embedded: any, context: SessionContext): number | null;
  /** Before the commit of a request that succeeded: changes here go into the commit. */
  beforeCommit?(embedded: any, context: SessionContext): void | Promise<void>;
  /**
   * After the commit: targeted updates of the feature's own columns, each on
   * its own.  A conflict here is ignored (a parallel request won the update).
   */
  afterCommit?(embedded: any, context: SessionContext): void | Promise<void>;
  /** After a route saved new per-session settings. */
  settingsSaved?(embedded: any, context: SessionContext): void;
  /**
   * How a column that this request and a concurrent one both changed is
   * merged (see merge.ts), by field name; a field without a rule is a conflict.
   */
  readonly merge?: Readonly<Record<string, (ours: any, theirs: any) => unknown>>;
}

/** A feature as embedded in one session entity. */
export interface EmbeddedFeature {
  readonly feature: Feature;
  readonly property: string;
}

const registry: Feature[] = [];

export function registerFeature(feature: Feature): Feature {
  registry.push(feature);
  return feature;
}

/** Every registered feature. */
export function allFeatures(): readonly Feature[] {
  return registry;
}

/** The feature whose embeddable is `cls` or its nearest registered ancestor. */
export function featureOf(cls: unknown): Feature | undefined {
  for (let c = cls; typeof c === 'function' && c !== Function.prototype; c = Object.getPrototypeOf(c)) {
    const found = registry.find((feature) => feature.embeddable === c);
    if (found) return found;
  }
  return undefined;
}

/** True when `feature` is `wanted` or a variant that includes it. */
export function provides(feature: Feature, wanted: Feature): boolean {
  for (let f: Feature | undefined = feature; f; f = f.includes) if (f === wanted) return true;
  return false;
}
