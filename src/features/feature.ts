import type { EntityClass } from '@mikro-orm/core';
import type { Context } from 'koa';
import type { SettingName, Settings } from '../settings.js';
import type { SessionRow } from '../types.js';

/** Why a loaded session is not valid: it expired, or its cookie was copied. */
export type Invalidity = 'idle' | 'absolute' | 'renewal-violation';

/** A targeted UPDATE's condition on one column: `value` (null: is null) or `{ $lt: value }`. */
export type ColumnCondition = unknown;

/**
 * What a feature sees of one request: the port between the features and the
 * request's lifecycle (SessionContext implements it).  A feature reaches its
 * own columns through part() and updateColumns(), never the row's other ones.
 */
export interface FeatureContext {
  /** The request time, fixed once so every feature sees the same instant (ms since the epoch). */
  readonly now: number;
  /** The row: managed if loaded, unmanaged while a new session is clean; undefined without a session. */
  readonly row: SessionRow | undefined;
  /** True until the row is committed. */
  readonly isNew: boolean;
  /** The route got a stored object it may have changed in place. */
  readonly handedOut: boolean;
  /** A route wrote through the API: data, flash, a feature's value or a setting. */
  written: boolean;
  /** Set to (re)send the cookie, e.g. to offer a renewal id. */
  sendCookie: boolean;
  /** What the request's cookie carried after the token (the features' cookieBytes). */
  readonly presentedExtra: Buffer | undefined;
  /** What the cookie this response sends carries after the token. */
  cookieExtra: Buffer | undefined;
  /** Option regenerateOnLogin. */
  readonly regenerateOnLogin: boolean;
  /** Option random: a number in [0, 1). */
  random(): number;
  /** The session's value of a setting: its own column if configurable and set, else the global one. */
  setting<K extends SettingName>(name: K): Settings[K];
  /** True when the managed row differs from what was loaded (in-place changes included). */
  hasChanges(): boolean;
  /** Loads the row named by the cookie, once (lazy mode). */
  load(): Promise<void>;
  /** Every public API goes through here: lazy mode refuses use before load(). */
  use(api: string): void;
  /** A fresh row for a new session; persisted only once it holds data. */
  createRow(): SessionRow;
  /** A new id and token for the same data; the old row is deleted in the same commit. */
  regenerate(): void;
  /**
   * `feature`'s embedded values in the row, or undefined without a row.
   * Throws FeatureNotEnabledError, naming `api`, when the entity does not embed it.
   */
  part<E extends object>(feature: Feature<E>, api: string): E | undefined;
  /**
   * A targeted UPDATE of `feature`'s columns, outside the unit of work, applied
   * only where every condition of `expect` still holds.  Returns whether the row changed.
   */
  updateColumns<E extends object>(
    feature: Feature<E>,
    expect: { [K in keyof E]?: ColumnCondition },
    values: Partial<E>,
  ): Promise<boolean>;
}

/**
 * A feature is one embeddable class plus the behaviour the lifecycle runs for
 * it, and the metadata the rest of the library reads of it.  Each feature
 * lives in one module of this folder and is listed in the catalogue
 * (index.ts); the lifecycle only ever iterates over the features the session
 * entity embeds, so an absent feature costs nothing.
 */
export interface Feature<E extends object = object> {
  /** The embeddable's name, used in messages: 'IdleTimeout'. */
  readonly name: string;
  /** The property defineSessionEntity embeds it under (its columns carry no prefix). */
  readonly property: string;
  /** The embeddable class; a subclass found in the entity's metadata matches too. */
  readonly embeddable: EntityClass<E>;
  /** For a configurable variant: the plain feature it includes. */
  readonly includes?: Feature<any>;
  /** Settings that need this feature (or a variant of it) when they are set. */
  readonly settings?: readonly SettingName[];
  /** Settings a session may change: the embeddable has a column for each. */
  readonly configurable?: readonly SettingName[];
  /** The embeddable class to embed to make `settings` configurable per session. */
  readonly configurableAs?: string;
  /** A timeout: the column holding the row's expiry (seconds since the epoch) and the setting that turns it on. */
  readonly expiry?: Expiry<E>;
  /** Bytes this feature adds to every cookie's payload after the token (cookieExtra). */
  readonly cookieBytes?: number;
  /** Cookie attributes a session may carry in its cookie's payload, after the fixed part (see cookie.ts). */
  readonly carried?: CarriedCookie;
  /** A per-session setting's column value as the setting's value (a sentinel decoded). */
  readSetting?(name: SettingName, stored: unknown): unknown;
  /** A per-session setting's value as stored in its column (null means "the global value"). */
  storeSetting?(name: SettingName, value: unknown, global: unknown): unknown;
  /** Whether the embedded values are session data (they make a new session dirty). */
  holdsData?(embedded: E): boolean;
  /** Initial values of a new session. */
  create?(embedded: E, context: FeatureContext): void;
  /** After loading a row: why it is not valid, if it is not (it is then deleted). */
  verify?(embedded: E, context: FeatureContext): Invalidity | undefined;
  /** The time (ms) this feature ends the session at, or null. */
  expiresAt?(embedded: E, context: FeatureContext): number | null;
  /** Before the commit of a request that succeeded: changes here go into the commit. */
  beforeCommit?(embedded: E, context: FeatureContext): void | Promise<void>;
  /**
   * After the commit: targeted updates of the feature's own columns, each on
   * its own.  A conflict here is ignored (a parallel request won the update).
   */
  afterCommit?(embedded: E, context: FeatureContext): void | Promise<void>;
  /** After a route saved new per-session settings. */
  settingsSaved?(embedded: E, context: FeatureContext): void;
  /**
   * How a column that this request and a concurrent one both changed is
   * merged (see merge.ts), by field name; a field without a rule is a conflict.
   */
  readonly merge?: { readonly [K in keyof E]?: (ours: E[K], theirs: E[K]) => E[K] };
}

/** A timeout feature's expiry column, read by garbage collection and the user-session listing. */
export interface Expiry<E = object> {
  /** The column: seconds since the epoch, or null while the timeout is off. */
  readonly column: keyof E & string;
  /** The setting (seconds) that turns the timeout on. */
  readonly setting: 'idleTimeout' | 'absoluteTimeout';
  /** In words, for messages: 'idle'. */
  readonly label: string;
  /** The expiry moves with activity: the last activity is the expiry minus the timeout. */
  readonly slides: boolean;
}

/** The cookie attributes a session carries in its cookie, encoded after the payload's fixed part. */
export interface CarriedCookie {
  /** The most bytes the encoding takes. */
  readonly maxBytes: number;
  /** What to carry for a session sent with `attributes`, or undefined when they are the global ones. */
  encode(attributes: Partial<Settings>, global: Settings): Buffer | undefined;
  /** What a cookie carried; undefined if nothing valid. */
  decode(bytes: Buffer): Partial<Settings> | undefined;
}

/** A feature as embedded in one session entity. */
export interface EmbeddedFeature {
  readonly feature: Feature<any>;
  readonly property: string;
}

/** True when `feature` is `wanted` or a variant that includes it. */
export function provides(feature: Feature<any>, wanted: Feature<any>): boolean {
  for (let f: Feature<any> | undefined = feature; f; f = f.includes) if (f === wanted) return true;
  return false;
}

/** Declares a feature with its hooks typed by its embeddable; a variant spreads its plain feature. */
export function defineFeature<E extends object>(feature: Feature<E>): Feature<E> {
  return Object.freeze(feature);
}

/**
 * The key under which ctx.session holds its lifecycle (session.ts defines
 * Session with it), so a feature's own middleware that starts from Koa's ctx
 * (csrfProtection) reaches the request's FeatureContext without naming
 * Session or the class behind the port: no per-request bookkeeping either.
 */
export const FEATURE_CONTEXT: unique symbol = Symbol('koa-mikro-session context');

/** The request's FeatureContext, or undefined when session() has not run for it. */
export function featureContextOf(ctx: Context): FeatureContext | undefined {
  const session = (ctx as { session?: { [FEATURE_CONTEXT]?: FeatureContext } }).session;
  return session?.[FEATURE_CONTEXT];
}
