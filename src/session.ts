import { isDeepStrictEqual, inspect } from 'node:util';
import type { EntityManager } from '@mikro-orm/core';
import type { Context } from 'koa';
import { assertStorable, assertStorableKey } from './data.js';
import { SessionDataError } from './errors.js';
import { getCsrfToken, newCsrfToken } from './features/csrf.js';
// The lifecycle behind a session. A symbol rather than a #private field: the methods run with `this` being the
// Proxy routes hold, which has no private slots. The port's symbol, so features' middleware find it (featureContextOf).
import { FEATURE_CONTEXT as CONTEXT, type FeatureContext } from './features/feature.js';
import { getUserid, setUserid, type UserSessionInfo, type UserSessions } from './features/userid.js';
import type { SessionReads } from './merge.js';
import type { SessionSettings } from './settings.js';
import type { SessionData, SessionEvent, SessionKey, SessionRow, SessionValue } from './types.js';

/**
 * What a Session needs of the request's lifecycle (SessionContext implements
 * it; the middleware wires the two together).  Besides what features see: the
 * data-change flags, the settings, and the lifecycle's own operations.
 */
export interface SessionHost extends FeatureContext {
  readonly ctx: Context;
  readonly em: EntityManager;
  /** The row is loaded, or known not to exist. */
  readonly loaded: boolean;
  /** The route changed the data or flash through the API. */
  dataWritten: boolean;
  /** The route got a stored object it may have changed in place. */
  handedOut: boolean;
  /** What the route read of the session (for merging a concurrent write). */
  readonly reads: SessionReads;
  /** The id of the committed row a regeneration in this request replaced. */
  readonly replacedId: string | undefined;
  readonly settings: SessionSettings;
  readonly users: UserSessions;
  setMaxAge(value: number | 'session'): void;
  expiresAt(): number | null;
  save(): Promise<void>;
  destroy(reason: string): void;
  defer(statement: (em: EntityManager) => Promise<unknown>): void;
  announce(name: string, event: SessionEvent): void;
}

export interface FlashOptions {
  /** Queue name; '' by default. */
  queue?: string;
  /** When false, a message deep-equal to one already queued is not added again. */
  allowDuplicate?: boolean;
}

/** express-session's callback style, which passport and others call: once, asynchronously, with null or the error. */
export type SessionCallback = (error: unknown) => void;

/**
 * The members of `ctx.session` routes may read as data properties: with no
 * SessionData declared, any name (koa-session's `ctx.session.views`); with one,
 * its keys.  The API's own names are reserved (see RESERVED).
 */
type DataProperties = keyof SessionData extends never ? { [key: string]: any } : Partial<SessionData>;

/**
 * `ctx.session`: what routes see.  Data is reachable two ways, kept in one
 * place (the row's data column): the typed Map API (get/set/has/delete), which
 * reaches every key, and koa-session's properties (`ctx.session.cart = [...]`),
 * which reach every key except the API's own names.  The lifecycle (loading,
 * committing, cookies) is SessionContext's business.
 */
export interface Session extends DataProperties {}
export class Session {
  declare readonly [CONTEXT]: SessionHost;

  constructor(context: SessionHost) {
    // Not enumerable, so neither Object.keys() nor util.inspect of the target shows the lifecycle.
    Object.defineProperty(this, CONTEXT, { value: context, configurable: true });
    // The Proxy turns data properties into get/set/delete; names of the API go to the class as usual.
    return new Proxy(this, dataProperties);
  }

  /** Non-secret id of the row (SHA-256 of the cookie's token). Reading it on a new session fixes its token. */
  get id(): string {
    return row(this[CONTEXT], 'id').id;
  }

  /** True until the session has been committed to the database. */
  get isNew(): boolean {
    const context = this[CONTEXT];
    context.use('isNew');
    return context.isNew;
  }

  /** Creation time in integer seconds since the epoch. */
  get created(): number {
    return row(this[CONTEXT], 'created').created;
  }

  /**
   * Every setting, readable by its option name, with this session's own value
   * where a configurable feature stores one; changed through withEdit().
   */
  get settings(): SessionSettings {
    return this[CONTEXT].settings;
  }

  /**
   * koa-session's cookie lifetime of this session, in milliseconds, or
   * 'session' for a browser-session cookie.  Setting it needs ConfigurableCookie
   * (the value is this session's cookieMaxAge, in whole seconds, rounded up).
   */
  get maxAge(): number | 'session' {
    const context = this[CONTEXT];
    context.use('maxAge');
    const seconds = context.setting('cookieMaxAge');
    return seconds === null ? 'session' : seconds * 1000;
  }

  set maxAge(value: number | 'session') {
    this[CONTEXT].setMaxAge(value);
  }

  /** The user id (Userid feature); null when nobody is logged in. */
  get userid(): unknown {
    return getUserid(this[CONTEXT]);
  }

  /** Setting a different non-null user regenerates the session id first (regenerateOnLogin); null forgets the user. */
  set userid(value: unknown) {
    setUserid(this[CONTEXT], value);
  }

  /** The CSRF token (Csrf feature), created if the session has none. */
  getCsrfToken(): string {
    return getCsrfToken(this[CONTEXT]);
  }

  /** A fresh CSRF token replacing the current one. */
  newCsrfToken(): string {
    return newCsrfToken(this[CONTEXT]);
  }

  /**
   * A new id and cookie for the same data (OWASP: rotate on privilege change).
   * The old row is deleted in the same commit; the new cookie goes out after it.
   * Unlike express-session's, the data is kept.  Returns a promise, and calls
   * `callback` (express-session's style, as passport uses it) when given.
   */
  regenerate(callback?: SessionCallback): Promise<void> {
    return settle(() => {
      const context = this[CONTEXT];
      context.use('regenerate');
      context.regenerate();
    }, callback);
  }

  /**
   * Commits now what the request did so far: the session and the request's
   * unit of work (with `transaction: true`, the request's transaction, after
   * which the route runs without one), and sets the cookie.  Later changes are
   * committed at the end of the request as usual.  Not needed in a route; for
   * express-session's callers (passport) and for handlers that outlive the
   * request (a WebSocket's messages).
   */
  save(callback?: SessionCallback): Promise<void> {
    const context = this[CONTEXT];
    return settle(() => {
      context.use('save');
      return context.save();
    }, callback);
  }

  /** express-session's name for invalidate(); written with the request's commit. */
  destroy(callback?: SessionCallback): Promise<void> {
    return settle(() => this.invalidate(), callback);
  }

  /** When the session will expire (the earliest of its idle and absolute expiry), or null. */
  get expiresAt(): Date | null {
    const context = this[CONTEXT];
    context.use('expiresAt');
    const at = context.expiresAt();
    return at === null ? null : new Date(at);
  }

  /** The current user's sessions (Userid feature), newest first. */
  async listUserSessions(): Promise<UserSessionInfo[]> {
    const context = this[CONTEXT];
    const userid = getUserid(context);
    return userid === null ? [] : context.users.list(userid, context.em);
  }

  /**
   * Deletes the current user's sessions ("log out everywhere"); with keepCurrent, all but this one.
   * The deletion commits with the request: a route that fails afterwards logs nobody out.
   * Returns how many sessions it deletes, this one included.
   */
  async revokeUserSessions(options: { keepCurrent?: boolean } = {}): Promise<number> {
    const context = this[CONTEXT];
    const userid = getUserid(context);
    if (userid === null) return 0;
    // A row being replaced by regenerate() is deleted by that regeneration already.
    const current = context.row && !context.isNew ? context.row.id : undefined;
    const except = [current, context.replacedId].filter((id): id is string => id !== undefined);
    const { users } = context;
    const others = await users.count(userid, context.em, except);
    context.defer(async (em) => {
      for (const id of await users.revoke(userid, em, except))
        context.announce('session:destroyed', { ctx: context.ctx, id, reason: 'revoked' });
    });
    if (options.keepCurrent) return others;
    const here = context.row ? 1 : 0;
    context.destroy('revoked');
    return others + here;
  }

  get<K extends SessionKey>(key: K): SessionValue<K> | undefined {
    return readValue(this[CONTEXT], key, 'get') as SessionValue<K> | undefined;
  }

  /** Stores `value` as JSON stores it; `undefined` deletes the key. */
  set<K extends SessionKey>(key: K, value: SessionValue<K>): this {
    writeValue(this[CONTEXT], key, value, `ctx.session.set(${JSON.stringify(key)})`);
    return this;
  }

  has(key: SessionKey): boolean {
    const context = this[CONTEXT];
    const data = read(context, 'has')?.data;
    context.reads.key(key);
    return !!data && Object.hasOwn(data, key);
  }

  delete(key: SessionKey): boolean {
    return deleteValue(this[CONTEXT], key, 'delete');
  }

  /** Removes all data; flash messages and features' values stay (use invalidate() to drop everything). */
  clear(): void {
    const context = this[CONTEXT];
    const stored = read(context, 'clear');
    if (!stored) return;
    context.reads.all();
    for (const key of Object.keys(stored.data)) delete stored.data[key];
    context.dataWritten = context.written = true;
  }

  keys(): SessionKey[] {
    const context = this[CONTEXT];
    const data = read(context, 'keys')?.data;
    context.reads.all();
    return data ? (Object.keys(data) as SessionKey[]) : [];
  }

  entries(): [SessionKey, unknown][] {
    const context = this[CONTEXT];
    const data = read(context, 'entries')?.data;
    if (!data) return [];
    context.reads.all();
    context.handedOut = true;
    return Object.entries(data) as [SessionKey, unknown][];
  }

  get size(): number {
    const context = this[CONTEXT];
    const data = read(context, 'size')?.data;
    context.reads.all();
    return data ? Object.keys(data).length : 0;
  }

  /** The data, as JSON.stringify(ctx.session) stores it (koa-session's toJSON()). */
  toJSON(): Record<string, unknown> {
    return Object.fromEntries(this.entries());
  }

  /**
   * Kept for compatibility with Pyramid and express-session: in-place changes
   * of nested values are saved without it (MikroORM compares JSON by value).
   */
  changed(): void {
    const context = this[CONTEXT];
    context.use('changed');
    context.dataWritten = context.handedOut = context.written = true;
  }

  /** Drops all data and the row (if committed); the request continues with a fresh new session. */
  invalidate(): void {
    const context = this[CONTEXT];
    context.use('invalidate');
    context.destroy('invalidated');
  }

  flash(message: unknown, options: FlashOptions = {}): void {
    const { queue = '', allowDuplicate = true } = options;
    assertStorableKey(queue, 'ctx.session.flash()');
    assertStorable(message, 'ctx.session.flash()');
    const flash = write(this[CONTEXT], 'flash').flash;
    const messages = Object.hasOwn(flash, queue) ? flash[queue] : [];
    if (!allowDuplicate && messages.some((queued) => isDeepStrictEqual(queued, message))) return;
    messages.push(message);
    this[CONTEXT].reads.appended(queue, message);
    Object.defineProperty(flash, queue, { value: messages, writable: true, enumerable: true, configurable: true });
  }

  /** Returns and removes the queue's messages. */
  popFlash(queue = ''): unknown[] {
    const context = this[CONTEXT];
    const flash = read(context, 'popFlash')?.flash;
    context.reads.queue(queue);
    if (!flash || !Object.hasOwn(flash, queue)) return [];
    const messages = flash[queue];
    delete flash[queue];
    context.dataWritten = context.written = true;
    return messages;
  }

  /**
   * Returns copies of the queue's messages (as the next request would read
   * them) and keeps them: peeking never changes what is stored.
   */
  peekFlash(queue = ''): unknown[] {
    const context = this[CONTEXT];
    const flash = read(context, 'peekFlash')?.flash;
    context.reads.queue(queue);
    return flash && Object.hasOwn(flash, queue) ? JSON.parse(JSON.stringify(flash[queue])) : [];
  }

  /** With `lazy: true`, loads the row named by the cookie (once); a no-op otherwise. */
  async load(): Promise<this> {
    await this[CONTEXT].load();
    return this;
  }

  /** console.log(ctx.session) shows the data, never the lifecycle (keys, tokens). */
  [inspect.custom](depth: number, options: object): string {
    const context = this[CONTEXT];
    return `Session ${inspect(context.loaded ? { ...context.row?.data } : '<not loaded>', { ...options, depth })}`;
  }
}

/**
 * Names that stay the API's when used as properties: the class's members,
 * Object.prototype's (so `${ctx.session}` and hasOwnProperty behave) and `then`
 * (so `await ctx.session` is not a thenable).  Data under these names is
 * reachable through get() and set().
 */
export const RESERVED: ReadonlySet<string> = new Set([
  ...Object.getOwnPropertyNames(Session.prototype),
  ...Object.getOwnPropertyNames(Object.prototype),
  'then',
]);

const dataProperties: ProxyHandler<Session> = {
  get(target, key, receiver) {
    if (typeof key === 'symbol' || RESERVED.has(key)) return Reflect.get(target, key, receiver);
    return readValue(target[CONTEXT], key, key);
  },
  set(target, key, value, receiver) {
    if (typeof key === 'symbol') return Reflect.set(target, key, value, receiver);
    if (RESERVED.has(key)) {
      if (!hasSetter(key)) throw reserved(key, 'set');
      return Reflect.set(target, key, value, receiver);
    }
    writeValue(target[CONTEXT], key, value, `ctx.session.${key}`);
    return true;
  },
  deleteProperty(target, key) {
    if (typeof key === 'symbol') return Reflect.deleteProperty(target, key);
    if (RESERVED.has(key)) throw reserved(key, 'delete');
    deleteValue(target[CONTEXT], key, key);
    return true;
  },
  has(target, key) {
    if (typeof key === 'symbol' || RESERVED.has(key)) return Reflect.has(target, key);
    const context = target[CONTEXT];
    const data = read(context, key)?.data;
    context.reads.key(key);
    return !!data && Object.hasOwn(data, key);
  },
  // Object.keys(ctx.session), { ...ctx.session } and for...in list the data keys.
  ownKeys(target) {
    const context = target[CONTEXT];
    const data = read(context, 'keys')?.data;
    context.reads.all();
    return data ? Object.keys(data).filter((key) => !RESERVED.has(key)) : [];
  },
  getOwnPropertyDescriptor(target, key) {
    if (typeof key === 'symbol' || RESERVED.has(key)) return undefined;
    const data = read(target[CONTEXT], key)?.data;
    if (!data || !Object.hasOwn(data, key)) return undefined;
    return { value: readValue(target[CONTEXT], key, key), writable: true, enumerable: true, configurable: true };
  },
  defineProperty(target, key, descriptor) {
    if (typeof key === 'symbol') return Reflect.defineProperty(target, key, descriptor);
    if (RESERVED.has(key)) throw reserved(key, 'set');
    if (!('value' in descriptor))
      throw new SessionDataError(`ctx.session.${key}: session data cannot be a getter or setter`);
    writeValue(target[CONTEXT], key, descriptor.value, `ctx.session.${key}`);
    return true;
  },
};

function hasSetter(key: string): boolean {
  return Object.getOwnPropertyDescriptor(Session.prototype, key)?.set !== undefined;
}

function reserved(key: string, verb: 'set' | 'delete'): SessionDataError {
  const way =
    verb === 'set' ? `ctx.session.set(${JSON.stringify(key)}, value)` : `ctx.session.delete(${JSON.stringify(key)})`;
  return new SessionDataError(
    `ctx.session.${key} is part of the session's API, not data: to ${verb} data under that name use ${way}`,
  );
}

/**
 * Runs a change and reports it the two ways callers expect: a promise, and
 * express-session's callback, called once, asynchronously, with null or the error.
 */
function settle(change: () => void | Promise<void>, callback: SessionCallback | undefined): Promise<void> {
  let done: Promise<void>;
  try {
    done = Promise.resolve(change());
  } catch (error) {
    done = Promise.reject(error);
  }
  if (!callback) return done;
  return done.then(
    () => callback(null),
    (error: unknown) => callback(error),
  );
}

function readValue(context: SessionHost, key: string, api: string): unknown {
  const data = read(context, api)?.data;
  context.reads.key(key);
  if (!data || !Object.hasOwn(data, key)) return undefined;
  const value = data[key];
  // A returned object may be changed in place: what it holds then is checked at commit.
  if (typeof value === 'object' && value !== null) context.handedOut = true;
  return value;
}

function writeValue(context: SessionHost, key: string, value: unknown, where: string): void {
  // As JSON.stringify: an undefined value is no value (koa-session's `ctx.session.x = undefined`).
  if (value === undefined) {
    deleteValue(context, key, where);
    return;
  }
  assertStorableKey(key, where);
  assertStorable(value, where);
  const { data } = write(context, where);
  // defineProperty, not assignment: a key named "__proto__" stays a plain key.
  Object.defineProperty(data, key, { value, writable: true, enumerable: true, configurable: true });
}

function deleteValue(context: SessionHost, key: string, api: string): boolean {
  const stored = read(context, api);
  if (!stored || !Object.hasOwn(stored.data, key)) return false;
  context.dataWritten = context.written = true;
  return delete stored.data[key];
}

/** The row if there is one; a new clean session has none yet and reads as empty. */
function read(context: SessionHost, api: string): SessionRow | undefined {
  context.use(api);
  return context.row;
}

/** The row, created (not yet persisted) for a new session. */
function row(context: SessionHost, api: string): SessionRow {
  context.use(api);
  return context.row ?? context.createRow();
}

function write(context: SessionHost, api: string): SessionRow {
  const stored = row(context, api);
  context.dataWritten = context.written = true;
  return stored;
}
