import { isDeepStrictEqual } from 'node:util';
import { assertStorable } from './data.js';
import type { SessionContext } from './context.js';
import type { SessionRow } from './entity.js';
import { getCsrfToken, newCsrfToken } from './features/csrf.js';
import { getUserid, setUserid, type UserSessionInfo } from './features/userid.js';
import type { SessionSettings } from './settings.js';
import type { SessionKey, SessionValue } from './types.js';

export interface FlashOptions {
  /** Queue name; '' by default. */
  queue?: string;
  /** When false, a message deep-equal to one already queued is not added again. */
  allowDuplicate?: boolean;
}

/**
 * `ctx.session`: what routes see.  Data lives behind get/set rather than as
 * properties, so a stored key can never shadow a method.  The lifecycle
 * (loading, committing, cookies) is SessionContext's business.
 */
export class Session {
  readonly #context: SessionContext;

  constructor(context: SessionContext) {
    this.#context = context;
  }

  /** The lifecycle behind a session, for the library's own middleware (csrfProtection). */
  static contextOf(session: Session): SessionContext {
    return session.#context;
  }

  /** Non-secret id of the row (SHA-256 of the cookie's token). Reading it on a new session fixes its token. */
  get id(): string {
    return this.#row('id').id;
  }

  /** True until the session has been committed to the database. */
  get isNew(): boolean {
    this.#context.use('isNew');
    return this.#context.isNew;
  }

  /** Creation time in integer seconds since the epoch. */
  get created(): number {
    return this.#row('created').created;
  }

  /**
   * Every setting, readable by its option name, with this session's own value
   * where a configurable feature stores one; changed through withEdit().
   */
  get settings(): SessionSettings {
    return this.#context.settings;
  }

  /** The user id (Userid feature); null when nobody is logged in. */
  get userid(): unknown {
    return getUserid(this.#context);
  }

  /** Setting a different non-null user regenerates the session id first (regenerateOnLogin); null forgets the user. */
  set userid(value: unknown) {
    setUserid(this.#context, value);
  }

  /** The CSRF token (Csrf feature), created if the session has none. */
  getCsrfToken(): string {
    return getCsrfToken(this.#context);
  }

  /** A fresh CSRF token replacing the current one. */
  newCsrfToken(): string {
    return newCsrfToken(this.#context);
  }

  /**
   * A new id and cookie for the same data (OWASP: rotate on privilege change).
   * The old row is deleted in the same commit; the new cookie goes out after it.
   */
  regenerate(): void {
    this.#context.use('regenerate');
    this.#context.regenerate();
  }

  /** When the session will expire (the earliest of its idle and absolute expiry), or null. */
  get expiresAt(): Date | null {
    this.#context.use('expiresAt');
    const at = this.#context.expiresAt();
    return at === null ? null : new Date(at);
  }

  /** The current user's sessions (Userid feature), newest first. */
  async listUserSessions(): Promise<UserSessionInfo[]> {
    const userid = getUserid(this.#context);
    return userid === null ? [] : this.#context.config.users.list(userid, this.#context.em);
  }

  /**
   * Deletes the current user's sessions ("log out everywhere"); with keepCurrent, all but this one.
   * The deletion commits with the request: a route that fails afterwards logs nobody out.
   * Returns how many sessions it deletes, this one included.
   */
  async revokeUserSessions(options: { keepCurrent?: boolean } = {}): Promise<number> {
    const context = this.#context;
    const userid = getUserid(context);
    if (userid === null) return 0;
    // A row being replaced by regenerate() is deleted by that regeneration already.
    const current = context.row && !context.isNew ? context.row.id : undefined;
    const except = [current, context.replacedId].filter((id): id is string => id !== undefined);
    const { users } = context.config;
    const others = await users.count(userid, context.em, except);
    context.defer((em) => users.revoke(userid, em, except));
    if (options.keepCurrent) return others;
    const here = context.row ? 1 : 0;
    context.destroy('revoked');
    return others + here;
  }

  get<K extends SessionKey>(key: K): SessionValue<K> | undefined {
    const data = this.#read('get')?.data;
    if (!data || !Object.hasOwn(data, key)) return undefined;
    const value = data[key];
    // A returned object may be mutated in place: its size is checked at commit.
    if (typeof value === 'object' && value !== null) this.#context.mayGrow = true;
    return value as SessionValue<K>;
  }

  set<K extends SessionKey>(key: K, value: SessionValue<K>): this {
    assertStorable(value, `ctx.session.set(${JSON.stringify(key)})`);
    const data = this.#write('set').data;
    // defineProperty, not assignment: a key named "__proto__" stays a plain key.
    Object.defineProperty(data, key, { value, writable: true, enumerable: true, configurable: true });
    return this;
  }

  has(key: SessionKey): boolean {
    const data = this.#read('has')?.data;
    return !!data && Object.hasOwn(data, key);
  }

  delete(key: SessionKey): boolean {
    const row = this.#read('delete');
    if (!row || !Object.hasOwn(row.data, key)) return false;
    this.#context.mayGrow = this.#context.written = true;
    return delete row.data[key];
  }

  /** Removes all data; flash messages and features' values stay (use invalidate() to drop everything). */
  clear(): void {
    const row = this.#read('clear');
    if (!row) return;
    for (const key of Object.keys(row.data)) delete row.data[key];
    this.#context.mayGrow = this.#context.written = true;
  }

  keys(): SessionKey[] {
    const data = this.#read('keys')?.data;
    return data ? (Object.keys(data) as SessionKey[]) : [];
  }

  entries(): [SessionKey, unknown][] {
    const data = this.#read('entries')?.data;
    if (!data) return [];
    this.#context.mayGrow = true;
    return Object.entries(data) as [SessionKey, unknown][];
  }

  get size(): number {
    const data = this.#read('size')?.data;
    return data ? Object.keys(data).length : 0;
  }

  /**
   * Kept for compatibility with Pyramid and express-session: in-place changes
   * of nested values are saved without it (MikroORM compares JSON by value).
   */
  changed(): void {
    this.#context.use('changed');
    this.#context.mayGrow = this.#context.written = true;
  }

  /** Drops all data and the row (if committed); the request continues with a fresh new session. */
  invalidate(): void {
    this.#context.use('invalidate');
    this.#context.destroy('invalidated');
  }

  flash(message: unknown, options: FlashOptions = {}): void {
    const { queue = '', allowDuplicate = true } = options;
    assertStorable(message, 'ctx.session.flash()');
    const flash = this.#write('flash').flash;
    const messages = Object.hasOwn(flash, queue) ? flash[queue] : [];
    if (!allowDuplicate && messages.some((queued) => isDeepStrictEqual(queued, message))) return;
    messages.push(message);
    Object.defineProperty(flash, queue, { value: messages, writable: true, enumerable: true, configurable: true });
  }

  /** Returns and removes the queue's messages. */
  popFlash(queue = ''): unknown[] {
    const flash = this.#read('popFlash')?.flash;
    if (!flash || !Object.hasOwn(flash, queue)) return [];
    const messages = flash[queue];
    delete flash[queue];
    this.#context.mayGrow = this.#context.written = true;
    return messages;
  }

  /** Returns the queue's messages and keeps them. */
  peekFlash(queue = ''): unknown[] {
    const flash = this.#read('peekFlash')?.flash;
    return flash && Object.hasOwn(flash, queue) ? [...flash[queue]] : [];
  }

  /** With `lazy: true`, loads the row named by the cookie (once); a no-op otherwise. */
  async load(): Promise<this> {
    await this.#context.load();
    return this;
  }

  /** The row if there is one; a new clean session has none yet and reads as empty. */
  #read(api: string): SessionRow | undefined {
    this.#context.use(api);
    return this.#context.row;
  }

  /** The row, created (not yet persisted) for a new session. */
  #row(api: string): SessionRow {
    this.#context.use(api);
    return this.#context.row ?? this.#context.createRow();
  }

  #write(api: string): SessionRow {
    const row = this.#row(api);
    this.#context.mayGrow = true;
    this.#context.written = true;
    return row;
  }
}
