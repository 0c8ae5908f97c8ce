import { MikroORM, type EntityManager, type EntityName, type IsolationLevel } from '@mikro-orm/core';
import { CookieCodec } from './codec.js';
import { bumpVersion, inspectSessionEntity, type SessionModel } from './entity.js';
import { ConfigurationError, FeatureNotEnabledError } from './errors.js';
import { provides, type CarriedCookie, type EmbeddedFeature, type Feature } from './features/feature.js';
import { FEATURES } from './features/index.js';
import {
  countUserSessions,
  listUserSessions,
  revokeUserSessions,
  useridFeature,
  type UserSessionLookup,
  type UserSessions,
} from './features/userid.js';
import { assertWritable } from './set-cookie.js';
import { resolveSettings, type SettingName, type Settings, type SettingsInput } from './settings.js';
import { SessionStatements } from './statements.js';
import { TOKEN_BYTES } from './token.js';
import type { EmKeyOption, SessionRow } from './types.js';

export interface SessionOptions extends SettingsInput {
  /** An initialised MikroORM instance whose entities include `entity`. */
  orm: MikroORM;
  /** The session entity: defineSessionEntity(...) or one extending SessionBase. */
  entity: EntityName<any>;
  /** base64url key(s) from generateSecretKey(); with a list, the first encrypts and all decrypt. */
  secret: string | readonly string[];
  /** Where the request's EntityManager is exposed on ctx; 'em' by default (the name registered in Register, if any). */
  emKey?: EmKeyOption;
  /** Milliseconds since the epoch; Date.now by default. Tests move time with it. */
  clock?: () => number;
  /** Load the row only when the route awaits ctx.session.load(); false by default. */
  lazy?: boolean;
  /**
   * false (default): no transaction until there is something to write; the
   * end-of-request flush writes the app's entities and the session in one.
   * true or { isolationLevel }: the whole request runs in one transaction.
   */
  transaction?: boolean | { isolationLevel?: IsolationLevel };
  /** Largest stored session (data + flash as JSON, bytes); 65536 by default. */
  maxSize?: number;
  /** Setting a different non-null userid regenerates the session id first; true by default. */
  regenerateOnLogin?: boolean;
  /** Ceilings for per-session values (seconds); null by default: no ceiling beyond the rules. */
  maxIdleTimeout?: number | null;
  maxAbsoluteTimeout?: number | null;
  maxRenewalTimeout?: number | null;
  /** Returns a number in [0, 1): the extensionChance draw. Math.random by default; tests pin it. */
  random?: () => number;
  /**
   * Seconds between in-process garbage collections (randomised ±20 %); null
   * (default) for none: run `koa-mikro-session gc` on a schedule instead.
   * Results and failures are emitted on the app as session:gc and session:gc-error.
   */
  gcInterval?: number | null;
}

/** Everything resolved once at start-up, shared by every request. */
export interface SessionConfig {
  readonly orm: MikroORM;
  readonly entity: EntityName<SessionRow>;
  readonly model: SessionModel;
  readonly codec: CookieCodec;
  readonly settings: Settings;
  readonly emKey: string;
  readonly clock: () => number;
  readonly lazy: boolean;
  readonly transaction: false | { isolationLevel?: IsolationLevel };
  readonly maxSize: number;
  readonly regenerateOnLogin: boolean;
  readonly random: () => number;
  /** Seconds between in-process garbage collections, or null for none. */
  readonly gcInterval: number | null;
  /** Bytes of the cookie's payload: the token, and what the embedded features add (cookieBytes). */
  readonly payloadLength: number;
  /** The embedded feature whose cookie attributes a session carries in its cookie, if any. */
  readonly carried: CarriedCookie | undefined;
  /** Each per-session setting, and the embedded feature whose column holds it. */
  readonly configurable: ReadonlyMap<SettingName, EmbeddedFeature>;
  /** Some cookie attribute is per-session: each response computes its own. */
  readonly configurableCookie: boolean;
  /** The feature each setting belongs to, for messages. */
  readonly settingOwners: ReadonlyMap<SettingName, Feature<any>>;
  readonly ceilings: ReadonlyMap<SettingName, number | null>;
  /** The row's SQL prepared at start-up, when the entity has no relations to load with it. */
  readonly statements: SessionStatements | undefined;
  readonly users: UserSessions;
}

const OPTION_NAMES = new Set([
  'orm',
  'entity',
  'secret',
  'emKey',
  'clock',
  'lazy',
  'transaction',
  'maxSize',
  'regenerateOnLogin',
  'maxIdleTimeout',
  'maxAbsoluteTimeout',
  'maxRenewalTimeout',
  'random',
  'gcInterval',
]);
const CEILINGS = [
  ['maxIdleTimeout', 'idleTimeout'],
  ['maxAbsoluteTimeout', 'absoluteTimeout'],
  ['maxRenewalTimeout', 'renewalTimeout'],
] as const;

/** Validates session()'s options and resolves everything a request needs, once. */
export function resolveConfig(options: SessionOptions): SessionConfig {
  if (!options || typeof options !== 'object')
    throw new ConfigurationError('session(options): options must be an object with orm, entity and secret');
  const {
    orm,
    entity,
    secret,
    clock = Date.now,
    lazy = false,
    transaction = false,
    maxSize = 65_536,
    regenerateOnLogin = true,
    random = Math.random,
  } = options;
  if (!(orm instanceof MikroORM)) {
    throw new ConfigurationError('option orm: expected an initialised MikroORM instance (await MikroORM.init(...))');
  }
  if (secret === undefined)
    throw new ConfigurationError(
      'option secret is required: generate a key with generateSecretKey() and keep it out of the code',
    );
  const settings = resolveSettings(options as unknown as Record<string, unknown>);
  assertWritable(settings);
  for (const name of Object.keys(options)) {
    if (!OPTION_NAMES.has(name) && !(name in settings)) throw new ConfigurationError(`unknown option ${name}`);
  }
  // A plain string here: the registered name narrows only what apps may pass.
  const emKey: unknown = options.emKey ?? 'em';
  if (typeof emKey !== 'string' || emKey === '' || emKey === 'session')
    throw new ConfigurationError('option emKey: expected a property name other than "session"');
  if (typeof clock !== 'function')
    throw new ConfigurationError('option clock: expected a function returning milliseconds since the epoch');
  if (typeof lazy !== 'boolean') throw new ConfigurationError('option lazy: expected a boolean');
  if (!Number.isSafeInteger(maxSize) || maxSize < 1)
    throw new ConfigurationError(`option maxSize: expected a positive whole number of bytes (got ${String(maxSize)})`);
  if (typeof transaction !== 'boolean' && (typeof transaction !== 'object' || transaction === null)) {
    throw new ConfigurationError('option transaction: expected a boolean or { isolationLevel }');
  }
  if (typeof regenerateOnLogin !== 'boolean')
    throw new ConfigurationError('option regenerateOnLogin: expected a boolean');
  if (typeof random !== 'function')
    throw new ConfigurationError('option random: expected a function returning a number in [0, 1)');
  const model = inspectSessionEntity(orm, entity);
  const codec = new CookieCodec(secret, settings.cookieName);
  const { configurable, settingOwners } = mapSettings(model, options);
  const ceilings = resolveCeilings(options, settings);
  const gcInterval = resolveGcInterval(options.gcInterval, settings, configurable);
  const carried = model.features.find(({ feature }) => feature.carried)?.feature.carried;
  return {
    regenerateOnLogin,
    random,
    gcInterval,
    payloadLength: model.features.reduce((length, { feature }) => length + (feature.cookieBytes ?? 0), TOKEN_BYTES),
    carried,
    statements: SessionStatements.prepare(orm, model, bumpVersion),
    configurable,
    configurableCookie: [...configurable.keys()].some((name) => name.startsWith('cookie')),
    settingOwners,
    ceilings,
    users: userSessions(model, settings),
    orm,
    entity: model.meta.class as EntityName<SessionRow>,
    model,
    codec,
    settings,
    emKey,
    clock,
    lazy,
    transaction: transaction === true ? {} : transaction,
    maxSize,
  };
}

function resolveCeilings(options: SessionOptions, settings: Settings): Map<SettingName, number | null> {
  const ceilings = new Map<SettingName, number | null>();
  for (const [option, name] of CEILINGS) {
    const ceiling = options[option] ?? null;
    if (ceiling !== null && (!Number.isSafeInteger(ceiling) || ceiling < 1)) {
      throw new ConfigurationError(
        `option ${option}: expected a whole number of seconds or null (got ${String(ceiling)})`,
      );
    }
    if (ceiling !== null && settings[name] !== null && settings[name] > ceiling) {
      throw new ConfigurationError(`option ${name} (${settings[name]}) is above its ceiling ${option} (${ceiling})`);
    }
    ceilings.set(name, ceiling);
  }
  return ceilings;
}

/** gcInterval, checked: collecting needs a timeout that can be on, globally or per session. */
function resolveGcInterval(
  interval: number | null | undefined,
  settings: Settings,
  configurable: ReadonlyMap<SettingName, EmbeddedFeature>,
): number | null {
  if (interval === undefined || interval === null) return null;
  if (!Number.isSafeInteger(interval) || interval < 1) {
    throw new ConfigurationError(
      `option gcInterval: expected a whole number of seconds or null (got ${String(interval)})`,
    );
  }
  const timeouts = FEATURES.flatMap(({ expiry }) => (expiry ? [expiry.setting] : []));
  if (!timeouts.some((name) => settings[name] !== null || configurable.has(name))) {
    throw new ConfigurationError(
      'option gcInterval: no idle or absolute timeout is on, so nothing could ever be collected',
    );
  }
  return interval;
}

/**
 * Which embedded feature holds each per-session setting, and a start-up
 * check: a setting given for a feature the entity lacks is an error, not a
 * silent no-op.
 */
function mapSettings(model: SessionModel, options: SessionOptions) {
  const configurable = new Map<SettingName, EmbeddedFeature>();
  const settingOwners = new Map<SettingName, Feature<any>>();
  for (const feature of FEATURES) {
    if (feature.includes) continue; // a variant: its plain feature owns the settings
    for (const name of [...(feature.settings ?? []), ...(feature.configurable ?? [])]) settingOwners.set(name, feature);
  }
  for (const embedded of model.features) {
    for (const name of embedded.feature.configurable ?? []) configurable.set(name, embedded);
  }
  for (const [name, owner] of settingOwners) {
    const given = (options as unknown as Record<string, unknown>)[name];
    if (given === undefined || given === null || !owner.settings?.includes(name)) continue;
    if (!model.features.some(({ feature }) => provides(feature, owner))) {
      const variant = owner.configurableAs ? ` (or ${owner.configurableAs})` : '';
      throw new ConfigurationError(
        `option ${name} needs the ${owner.name} feature: add ${owner.name}${variant} to the session entity's features`,
      );
    }
  }
  return { configurable, settingOwners };
}

/** The Userid queries over this entity, with the expiries of the timeout features it embeds. */
function userSessions(model: SessionModel, settings: Settings): UserSessions {
  const timeouts = model.features.flatMap(({ feature, property }) =>
    feature.expiry ? [{ property, expiry: feature.expiry, timeout: settings[feature.expiry.setting] }] : [],
  );
  const lookup = (em: EntityManager): UserSessionLookup => {
    const property = model.features.find(({ feature }) => provides(feature, useridFeature))?.property;
    if (!property) throw new FeatureNotEnabledError('Userid', 'listUserSessions() and revokeUserSessions()');
    return { em, entity: model.meta.class as EntityName<SessionRow>, property, timeouts };
  };
  return {
    list: (userid, em) => listUserSessions(lookup(em), userid),
    revoke: (userid, em, except) => revokeUserSessions(lookup(em), userid, except),
    count: (userid, em, except) => countUserSessions(lookup(em), userid, except),
  };
}
