import { DeadlockException, LockWaitTimeoutException, OptimisticLockError, type EntityManager } from '@mikro-orm/core';
import type { Context } from 'koa';
import { storedSize } from './data.js';
import type { SessionRow } from './entity.js';
import { SessionConflictError, SessionDataError, SessionError, SessionNotLoadedError } from './errors.js';
import type { SessionConfig } from './middleware.js';
import { Session } from './session.js';
import { buildSetCookie, writeSetCookie } from './set-cookie.js';
import { newToken, sessionIdOf, TOKEN_BYTES } from './token.js';

/** Payload of `session:invalid-cookie` and `session:crypto-error`; never carries the cookie value. */
export interface InvalidCookieEvent {
  ctx: Context;
  reason: 'malformed' | 'unknown-session' | 'unknown-key' | 'forged';
}

/**
 * One request's session lifecycle: read the cookie, load the row, let the
 * route run, then persist, flush (or commit) and only then write the cookie.
 * Kept apart from Session, the object routes see.
 */
export class SessionContext {
  readonly session = new Session(this);
  /** The row: managed if loaded, unmanaged while a new session is clean. */
  row: SessionRow | undefined;
  /** True until the row is committed. */
  isNew = true;
  /** A route changed something that may change the stored size. */
  mayGrow = false;

  /** The token the cookie carries (or the new session's). */
  #token: Buffer | undefined;
  /** The row is loaded, or known not to exist (lazy: false loads before the route). */
  #loaded = false;
  #loading: Promise<void> | undefined;
  /** The request's cookie was made under an older key: re-issue it under the first. */
  #stale = false;
  /** The request's cookie names no usable session: send a removal. */
  #removeCookie = false;
  /** The route used ctx.session: the response depends on the cookie. */
  #used = false;
  /** The request carried our cookie, valid or not. */
  #hadCookie = false;

  constructor(
    readonly config: SessionConfig,
    readonly ctx: Context,
    readonly em: EntityManager,
  ) {}

  /** Before the route: decode the cookie and, unless lazy, load the row. */
  async start(): Promise<void> {
    const { config, ctx } = this;
    const value = ctx.cookies.get(config.settings.cookieName, { signed: false });
    if (value !== undefined) {
      this.#hadCookie = true;
      const decoded = config.codec.decode(value, TOKEN_BYTES);
      if (decoded.ok) {
        this.#token = decoded.payload;
        this.#stale = decoded.stale;
      } else {
        this.#reject(decoded.reason === 'malformed' ? 'session:invalid-cookie' : 'session:crypto-error', decoded.reason);
      }
    }
    if (!config.lazy) await this.load();
  }

  /**
   * Loads the row named by the cookie, once.  With lazy: true the route calls
   * it, even without a cookie, so a forgotten load() fails on the first visit
   * rather than only for returning visitors.
   */
  load(): Promise<void> {
    if (this.#loaded) return Promise.resolve();
    if (!this.#token) {
      this.#loaded = true;
      return Promise.resolve();
    }
    return (this.#loading ??= this.#fetch());
  }

  async #fetch(): Promise<void> {
    const row = await this.em.findOne(this.config.entity, { id: sessionIdOf(this.#token!) });
    if (row) {
      this.row = row;
      this.isNew = false;
    } else {
      // Deleted, expired and collected, or never ours: the client starts afresh.
      this.#reject('session:invalid-cookie', 'unknown-session');
    }
    this.#loaded = true;
  }

  #reject(event: string, reason: InvalidCookieEvent['reason']): void {
    this.#token = undefined;
    this.#stale = false;
    this.#removeCookie = true;
    const payload: InvalidCookieEvent = { ctx: this.ctx, reason };
    this.ctx.app.emit(event, payload);
  }

  /** Every public API goes through here: lazy mode refuses use before load(). */
  use(api: string): void {
    if (!this.#loaded) throw new SessionNotLoadedError(api);
    this.#used = true;
  }

  /** A fresh row for a new session; persisted only once it holds data. */
  createRow(): SessionRow {
    const token = newToken();
    const row: SessionRow = this.em.create(
      this.config.entity,
      // version given here, so no driver has to read the column default back after the INSERT.
      { id: sessionIdOf(token), created: Math.floor(this.config.clock() / 1000), version: 1, data: {}, flash: {} },
      { persist: false },
    );
    this.#token = token;
    this.row = row;
    this.isNew = true;
    return row;
  }

  invalidate(): void {
    if (this.row && !this.isNew) this.em.remove(this.row);
    this.row = undefined;
    this.#token = undefined;
    this.#stale = false;
    this.isNew = true;
    this.#removeCookie = this.#hadCookie;
  }

  /** After the route succeeded: persist, check, flush or commit, and only then write the cookie. */
  async finish(): Promise<void> {
    const { row, em, config } = this;
    const insert = !!row && this.isNew && holdsData(row);
    if (insert) em.persist(row);
    if (this.mayGrow && row && (insert || !this.isNew)) {
      const size = storedSize(row.data, row.flash);
      if (size > config.maxSize) {
        throw new SessionDataError(`the session would store ${size} bytes, over the maxSize limit of ${config.maxSize}; nothing was saved`);
      }
    }
    const cookie = insert || (this.#stale && row && !this.isNew) ? 'set' : this.#removeCookie ? 'remove' : undefined;
    // Built before the commit, so a cookie that cannot be sent stops the commit.
    const header = cookie && this.#setCookie(cookie === 'set' ? config.codec.encode(this.#token!) : null);
    try {
      if (config.transaction) await em.commit();
      else await em.flush();
    } catch (error) {
      throw isConflict(error) ? new SessionConflictError({ cause: error }) : error;
    }
    if (insert) this.isNew = false;
    if (header) {
      writeSetCookie(this.ctx, config.settings.cookieName, header);
      this.ctx.set('Cache-Control', 'no-store');
    }
    if (this.#used || cookie) this.ctx.vary('Cookie');
  }

  /** After the route (or finish) failed: nothing is written, no cookie goes out. */
  async abort(): Promise<void> {
    if (this.em.isInTransaction()) await this.em.rollback();
  }

  #setCookie(value: string | null): string {
    const { ctx, config } = this;
    const { settings } = config;
    if (ctx.headerSent) {
      throw new SessionError('the session changed after the response headers were sent, so its cookie cannot be written; nothing was saved');
    }
    let secure = settings.cookieSecure === 'auto' ? ctx.secure : settings.cookieSecure;
    if (secure && !ctx.secure) {
      // A cookie that reached us over plain HTTP is not a Secure one: remove it as it is.
      if (value === null) secure = false;
      else {
        throw new SessionError(
          'cookieSecure is true but this request is not HTTPS, so the cookie cannot be sent; nothing was saved. ' +
            'Behind a TLS-terminating proxy set app.proxy = true, or use cookieSecure: "auto"',
        );
      }
    }
    return buildSetCookie(settings, value, secure, config.clock());
  }
}

/** A new session is written only once it holds something (lazy sessions). */
function holdsData(row: SessionRow): boolean {
  for (const _ in row.data) return true;
  for (const _ in row.flash) return true;
  return false;
}

function isConflict(error: unknown): boolean {
  return error instanceof OptimisticLockError || error instanceof DeadlockException || error instanceof LockWaitTimeoutException;
}
