import { MikroORM, RequestContext, type EntityManager, type EntityName, type IsolationLevel } from '@mikro-orm/core';
import type { Context, Middleware, Next } from 'koa';
import { SessionContext } from './context.js';
import { CookieCodec } from './cookie.js';
import { inspectSessionEntity, type SessionModel, type SessionRow } from './entity.js';
import { ConfigurationError } from './errors.js';
import { assertWritable } from './set-cookie.js';
import { resolveSettings, type Settings, type SettingsInput } from './settings.js';

export interface SessionOptions extends SettingsInput {
  /** An initialised MikroORM instance whose entities include `entity`. */
  orm: MikroORM;
  /** The session entity: defineSessionEntity(...) or one extending SessionBase. */
  entity: EntityName<any>;
  /** base64url key(s) from generateSecretKey(); with a list, the first encrypts and all decrypt. */
  secret: string | readonly string[];
  /** Where the request's EntityManager is exposed on ctx; 'em' by default. */
  emKey?: string;
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
}

const OPTION_NAMES = new Set(['orm', 'entity', 'secret', 'emKey', 'clock', 'lazy', 'transaction', 'maxSize']);

/**
 * The middleware: per request, fork an EntityManager, load the session, run
 * the route, then flush the route's entities and the session together.
 */
export function session(options: SessionOptions): Middleware {
  const config = resolveConfig(options);
  const { orm, emKey } = config;
  // MikroORM's request context forks the EntityManager and makes orm.em resolve
  // to that fork for everything the request awaits, routes included.
  return (ctx, next) => RequestContext.create(orm.em, () => handle(ctx, next, RequestContext.getEntityManager(orm.em.name)!));

  async function handle(ctx: Context, next: Next, em: EntityManager): Promise<void> {
    (ctx as any)[emKey] = em;
    const context = new SessionContext(config, ctx, em);
    ctx.session = context.session;
    try {
      if (config.transaction) await em.begin(config.transaction);
      await context.start();
      await next();
      await context.finish();
    } catch (error) {
      await context.abort();
      throw error;
    }
  }
}

function resolveConfig(options: SessionOptions): SessionConfig {
  if (!options || typeof options !== 'object') throw new ConfigurationError('session(options): options must be an object with orm, entity and secret');
  const { orm, entity, secret, emKey = 'em', clock = Date.now, lazy = false, transaction = false, maxSize = 65_536 } = options;
  if (!(orm instanceof MikroORM)) {
    throw new ConfigurationError('option orm: expected an initialised MikroORM instance (await MikroORM.init(...))');
  }
  if (secret === undefined) throw new ConfigurationError('option secret is required: generate a key with generateSecretKey() and keep it out of the code');
  const settings = resolveSettings(options as unknown as Record<string, unknown>);
  assertWritable(settings);
  for (const name of Object.keys(options)) {
    if (!OPTION_NAMES.has(name) && !(name in settings)) throw new ConfigurationError(`unknown option ${name}`);
  }
  if (typeof emKey !== 'string' || emKey === '' || emKey === 'session') throw new ConfigurationError('option emKey: expected a property name other than "session"');
  if (typeof clock !== 'function') throw new ConfigurationError('option clock: expected a function returning milliseconds since the epoch');
  if (typeof lazy !== 'boolean') throw new ConfigurationError('option lazy: expected a boolean');
  if (!Number.isSafeInteger(maxSize) || maxSize < 1) throw new ConfigurationError(`option maxSize: expected a positive whole number of bytes (got ${String(maxSize)})`);
  if (typeof transaction !== 'boolean' && (typeof transaction !== 'object' || transaction === null)) {
    throw new ConfigurationError('option transaction: expected a boolean or { isolationLevel }');
  }
  const model = inspectSessionEntity(orm, entity);
  const codec = new CookieCodec(secret, settings.cookieName);
  return {
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
