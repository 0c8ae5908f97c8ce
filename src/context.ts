import { DeadlockException, LockWaitTimeoutException, OptimisticLockError, type EntityManager } from '@mikro-orm/core';
import type { Context } from 'koa';
import type { SessionConfig } from './config.js';
import { guardCommit, guardLoad, recordingCheckouts, rollbackTransaction } from './connection-failures.js';
import { assertStorableColumns, storedSize } from './data.js';
import { embeddedIn } from './entity.js';
import {
  FeatureNotEnabledError,
  SessionConflictError,
  SessionDataError,
  SessionError,
  SessionNotLoadedError,
  SettingsError,
} from './errors.js';
import {
  provides,
  type ColumnCondition,
  type EmbeddedFeature,
  type Feature,
  type FeatureContext,
  type Invalidity,
} from './features/feature.js';
import { writeSession } from './flush.js';
import { mergeConcurrentWrite, SessionReads } from './merge.js';
import { buildSetCookie, varyOnCookie, writeSetCookie, type CookieSettings } from './set-cookie.js';
import { SessionSettings, type SettingName, type Settings, type SettingsHost } from './settings.js';
import { newToken, sessionIdOf, sessionIdOfPayload, TOKEN_BYTES } from './token.js';
import type { InvalidCookieEvent, SessionEvent, SessionRow } from './types.js';

/**
 * How findOne() reads the session row: from the primary (see #select), and into the request's unit of
 * work even where the app's ORM disables the identity map: the end of the request writes what it holds.
 */
const SESSION_ROW = { connectionType: 'write', disableIdentityMap: false } as const;

/**
 * One request's session lifecycle: read the cookie, load the row and check
 * it, let the route run, then let the features act, flush (or commit) and
 * only then write the cookie and emit the lifecycle events.  Kept apart from
 * Session, the object routes see, which it does not know: the middleware
 * wires the two together, and Session sees it only through SessionHost, the
 * features through FeatureContext, the settings through SettingsHost.
 */
export class SessionContext implements FeatureContext, SettingsHost {
  /** The row: managed if loaded, unmanaged while a new session is clean. */
  row: SessionRow | undefined;
  /** True until the row is committed. */
  isNew = true;
  /** The route changed the data or flash through the API (set, delete, flash...). */
  dataWritten = false;
  /** The route got a stored object it may have changed in place (get() of an object, entries()). */
  handedOut = false;
  /** A route wrote through the API: data, flash, a feature's value or a setting. */
  written = false;
  /** Features ask for the cookie to be (re)sent, e.g. to offer a renewal id. */
  sendCookie = false;
  /** Extra cookie payload after the token (the renewal id), set by the renewal feature. */
  cookieExtra: Buffer | undefined;
  /** What the request's cookie carried after the token. */
  presentedExtra: Buffer | undefined;
  /** The request time, fixed once so every feature sees the same instant (ms). */
  readonly now: number;

  /** The token the cookie carries (or the new session's). */
  #token: Buffer | undefined;
  /** The decrypted cookie payload #token was read from; undefined once #token is another. */
  #presented: Buffer | undefined;
  /** The row is loaded, or known not to exist. */
  #loaded = false;
  #loading: Promise<void> | undefined;
  /** The request's cookie was made under an older key: re-issue it under the first. */
  #stale = false;
  /** The cookie attributes the request's cookie carried (ConfigurableCookie sessions with their own Path or Domain). */
  #carried: Partial<Settings> | undefined;
  /** The cookie to remove, with the attributes of the session that had it. */
  #removal: CookieSettings | undefined;
  /** The route used ctx.session: the response depends on the cookie. */
  #used = false;
  /** The request carried our cookie, valid or not. */
  #hadCookie = false;
  /** Lifecycle events, emitted only once the commit succeeded. */
  #events: [string, SessionEvent][] = [];
  /** A committed session was regenerated: its successor is written even without data. */
  #keepRow = false;
  /** The id of the committed row a regeneration replaced (deleted by the same commit). */
  replacedId: string | undefined;
  /** Statements that must commit or roll back with the request (revocations). */
  #deferred: ((em: EntityManager) => Promise<unknown>)[] = [];

  constructor(
    readonly config: SessionConfig,
    readonly ctx: Context,
    readonly em: EntityManager,
  ) {
    this.now = config.clock();
  }

  get features(): readonly EmbeddedFeature[] {
    return this.config.model.features;
  }

  get regenerateOnLogin(): boolean {
    return this.config.regenerateOnLogin;
  }

  random(): number {
    return this.config.random();
  }

  get users(): SessionConfig['users'] {
    return this.config.users;
  }

  /** The session's value of a setting: its own column if configurable and set, else the global one. */
  setting<K extends SettingName>(name: K): Settings[K] {
    const owner = this.config.configurable.get(name);
    if (owner && this.row) {
      const stored = embeddedIn(this.row, owner.property)?.[name];
      if (stored !== null && stored !== undefined)
        return (owner.feature.readSetting ? owner.feature.readSetting(name, stored) : stored) as Settings[K];
    }
    return this.config.settings[name];
  }

  part<E extends object>(feature: Feature<E>, api: string): E | undefined {
    const embedded = this.features.find((candidate) => provides(candidate.feature, feature));
    if (!embedded) throw new FeatureNotEnabledError(feature.name, api);
    return this.row && embeddedIn(this.row, embedded.property);
  }

  get ceilings(): ReadonlyMap<SettingName, number | null> {
    return this.config.ceilings;
  }

  #settings: SessionSettings | undefined;
  get settings(): SessionSettings {
    return (this.#settings ??= new SessionSettings(this));
  }

  assertConfigurable(name: SettingName): void {
    if (this.config.configurable.has(name)) return;
    const owner = this.config.settingOwners.get(name);
    const fix = owner?.configurableAs
      ? `embed ${owner.configurableAs} instead of ${owner.name}`
      : owner
        ? `embed ${owner.name}`
        : 'it is fixed at start-up';
    throw new SettingsError(`${name} cannot be changed per session: ${fix}`);
  }

  /** Stores saved settings in the row's configurable columns; the features reschedule their expiries. */
  saveSettings(values: Partial<Record<SettingName, unknown>>): void {
    const row = this.row ?? this.createRow();
    for (const [name, value] of Object.entries(values) as [SettingName, unknown][]) {
      // A null column means "the global value"; the feature may store a sentinel for a null that isn't.
      const { feature, property } = this.config.configurable.get(name)!;
      embeddedIn(row, property)[name] = feature.storeSetting
        ? feature.storeSetting(name, value, this.config.settings[name])
        : value;
    }
    for (const { feature, property } of this.features) feature.settingsSaved?.(embeddedIn(row, property), this);
    // New cookie attributes reach the browser only with a new Set-Cookie.
    if (Object.keys(values).some((name) => name.startsWith('cookie'))) this.sendCookie = true;
  }

  /** The earliest expiry (ms since the epoch) of the session, or null. */
  expiresAt(): number | null {
    const row = this.row;
    if (!row) return null;
    let earliest: number | null = null;
    for (const { feature, property } of this.features) {
      const at = feature.expiresAt?.(embeddedIn(row, property), this) ?? null;
      if (at !== null && (earliest === null || at < earliest)) earliest = at;
    }
    return earliest;
  }

  /** Before the route: decode the cookie and, unless lazy, load the row. */
  async start(): Promise<void> {
    const { config, ctx } = this;
    const value = ctx.cookies.get(config.settings.cookieName, { signed: false });
    if (value !== undefined) {
      this.#hadCookie = true;
      const decoded = config.codec.decode(value, config.payloadLength, config.carried?.maxBytes ?? 0);
      if (decoded.ok) {
        const { payload } = decoded;
        this.#token = payload.subarray(0, TOKEN_BYTES);
        this.#presented = payload;
        if (config.payloadLength > TOKEN_BYTES)
          this.presentedExtra = payload.subarray(TOKEN_BYTES, config.payloadLength);
        this.#carried = config.carried?.decode(payload.subarray(config.payloadLength));
        this.#stale = decoded.stale;
      } else {
        this.#reject(
          decoded.reason === 'malformed' ? 'session:invalid-cookie' : 'session:crypto-error',
          decoded.reason,
        );
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
    return (this.#loading ??= guardLoad(this.#fetch()));
  }

  async #fetch(): Promise<void> {
    const row = await this.#select(this.#presented ? sessionIdOfPayload(this.#presented) : sessionIdOf(this.#token!));
    this.#loaded = true;
    if (!row) {
      // Deleted, expired and collected, or never ours: the client starts afresh.
      this.#reject('session:invalid-cookie', 'unknown-session');
      return;
    }
    this.row = row;
    this.isNew = false;
    for (const { feature, property } of this.features) {
      const invalid = feature.verify?.(embeddedIn(row, property), this);
      if (invalid) return this.#invalidated(row, invalid);
    }
  }

  /**
   * The primary-key SELECT.  For entities without relations it is one SQL text
   * prepared at start-up and made an entity as findOne() makes its result
   * (statements.ts managed()): findOne() would build a query (criteria, query
   * builder, populate planning) on every request.
   */
  async #select(id: string): Promise<SessionRow | null> {
    const { statements, entity } = this.config;
    // A row-level-security session context is applied by findOne(), in a transaction of its own.
    // Read from the primary, whatever preferReadReplicas says: a replica may not have the row yet (a login
    // lost) or may still have it (a revoked session back to life). The prepared path below uses it too.
    if (!statements || this.em.getSessionContext()) return this.em.findOne(entity, { id }, SESSION_ROW);
    const rows =
      (await statements.native?.select(this.em, statements.select, [id])) ??
      (await this.em
        .getConnection()
        .execute<Record<string, unknown>[]>(statements.select, [id], 'all', this.em.getTransactionContext()));
    return rows.length ? statements.managed(this.em, rows[0]) : null;
  }

  /** An expired session, or one whose cookie was copied: deleted on first encounter. */
  #invalidated(row: SessionRow, invalid: Invalidity): void {
    const event: SessionEvent = { ctx: this.ctx, id: row.id, reason: invalid };
    this.ctx.app.emit(invalid === 'renewal-violation' ? 'session:renewal-violation' : 'session:expired', event);
    this.destroy(invalid === 'renewal-violation' ? invalid : 'expired');
  }

  #reject(event: string, reason: InvalidCookieEvent['reason']): void {
    this.#token = this.#presented = undefined;
    this.#stale = false;
    this.presentedExtra = undefined;
    // A cookie that authenticated but names no row is removed where the browser keeps it.
    this.#removal = this.#carried ? { ...this.config.settings, ...this.#carried } : this.config.settings;
    const payload: InvalidCookieEvent = { ctx: this.ctx, reason };
    this.ctx.app.emit(event, payload);
  }

  /** The row is loaded, or known not to exist (always, once start() ran without lazy). */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** koa-session's `ctx.session.maxAge = ms | 'session'`: this session's cookieMaxAge (ConfigurableCookie). */
  setMaxAge(value: number | 'session'): void {
    this.use('maxAge');
    if (!this.config.configurable.has('cookieMaxAge'))
      throw new FeatureNotEnabledError(
        this.config.settingOwners.get('cookieMaxAge')?.name ?? 'ConfigurableCookie',
        'setting ctx.session.maxAge',
      );
    if (value !== 'session' && (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)) {
      throw new SettingsError(
        `ctx.session.maxAge: expected a number of milliseconds above 0, or 'session' (got ` +
          `${JSON.stringify(value) ?? String(value)})`,
      );
    }
    this.settings.withEdit((settings) => {
      settings.cookieMaxAge = value === 'session' ? null : Math.ceil(value / 1000);
    });
  }

  /** Every public API goes through here: lazy mode refuses use before load(). */
  use(api: string): void {
    if (!this.#loaded) throw new SessionNotLoadedError(api);
    this.#used = true;
  }

  /** A fresh row for a new session; persisted only once it holds data. */
  createRow(from?: SessionRow): SessionRow {
    const token = newToken();
    const data: Record<string, unknown> = {
      id: sessionIdOf(token),
      created: from?.created ?? Math.floor(this.now / 1000),
      // version given here, so no driver has to read the column default back after the INSERT.
      version: 1,
      data: from ? structuredClone(from.data) : {},
      flash: from ? structuredClone(from.flash) : {},
    };
    for (const { property } of this.features) data[property] = from ? { ...embeddedIn(from, property) } : {};
    const row = this.em.create(this.config.entity, data as unknown as SessionRow, { persist: false });
    this.#token = token;
    this.#presented = undefined;
    this.#stale = false;
    this.row = row;
    this.isNew = true;
    for (const { feature, property } of this.features) feature.create?.(embeddedIn(row, property), this);
    return row;
  }

  /**
   * Deletes the committed row (at commit) and continues with no session; the
   * cookie is removed.  `deleted`: the row is gone already (revoked by a query).
   */
  destroy(reason: string, deleted = false): void {
    const { row } = this;
    if (row && !this.isNew) {
      if (deleted) this.em.getUnitOfWork().unsetIdentity(row);
      else this.em.remove(row);
      this.#events.push(['session:destroyed', { ctx: this.ctx, id: row.id, reason }]);
    } else if (this.replacedId) {
      // Regenerated in this request: the new row is never written, and the committed one it replaced ends.
      this.#events = this.#events.filter(([name]) => name !== 'session:regenerated');
      this.#events.push(['session:destroyed', { ctx: this.ctx, id: this.replacedId, reason }]);
    }
    this.replacedId = undefined;
    if (this.#hadCookie) this.#removal = this.#cookieSettings();
    this.row = undefined;
    this.#token = this.#presented = undefined;
    this.#stale = false;
    this.presentedExtra = undefined;
    this.cookieExtra = undefined;
    this.sendCookie = false;
    this.#keepRow = false;
    this.isNew = true;
  }

  /** A new id and token for the same data; the old row is deleted in the same commit. */
  regenerate(): void {
    const old = this.row;
    if (!old) return;
    this.written = true;
    const wasCommitted = !this.isNew;
    this.createRow(old);
    if (wasCommitted) {
      this.em.remove(old);
      this.replacedId = old.id;
      // The client holds a session: it keeps one, under the new id, even if it stores nothing.
      this.#keepRow = true;
      this.#events.push(['session:regenerated', { ctx: this.ctx, id: this.row!.id, previousId: old.id }]);
    }
  }

  /**
   * A targeted UPDATE of one embedded feature's columns (a read extension, a
   * renewal offer), applied only where `expect` still holds: `{ key: value }`
   * (null: is null) or `{ key: { $lt: value } }`.  Runs on its own, outside the
   * unit of work.  Returns whether the row changed.
   */
  async updateColumns<E extends object>(
    feature: Feature<E>,
    expect: { [K in keyof E]?: ColumnCondition },
    values: Partial<E>,
  ): Promise<boolean> {
    const { statements, entity } = this.config;
    const { property } = this.features.find((embedded) => provides(embedded.feature, feature))!;
    const id = this.row!.id;
    // A row-level-security session context is applied by MikroORM's own statement, in a transaction of its own.
    if (statements?.writes && !this.em.getSessionContext())
      return (
        (await statements.updateColumns(this.em, id, property, expect, values as Record<string, unknown>))
          .affectedRows > 0
      );
    return (await this.em.nativeUpdate(entity, { id, [property]: expect } as any, { [property]: values } as any)) > 0;
  }

  /** What the route read of the session: what a concurrent write must have left alone (merge.ts). */
  readonly reads = new SessionReads();

  /** A concurrent request wrote the row first: replay this request's changes onto its row, if they don't collide. */
  #merge(row: SessionRow): Promise<boolean> {
    const { em, config } = this;
    return mergeConcurrentWrite(row, {
      em,
      meta: config.model.meta,
      features: this.features,
      reads: this.reads,
      load: async () => {
        const rows = await em
          .getConnection('write')
          .execute<Record<string, unknown>[]>(config.statements!.select, [row.id], 'all');
        // Mapped by a fork of its own: the request's identity map holds this request's row under the same id.
        return rows.length ? config.statements!.managed(em.fork({ clear: true }), rows[0]) : null;
      },
    });
  }

  /** Emits `name` once the request's commit succeeded (never for a request that rolled back). */
  announce(name: string, event: SessionEvent): void {
    this.#events.push([name, event]);
  }

  /** Runs `statement` inside the request's commit: a later error rolls it back with everything else. */
  defer(statement: (em: EntityManager) => Promise<unknown>): void {
    this.#deferred.push(statement);
  }

  /**
   * True when one of `properties` of the managed row differs from what was
   * loaded (in-place changes included).  Compared as stored, by JSON text: the
   * comparator's own snapshot would throw on a value JSON can't hold.
   */
  #columnsChanged(row: SessionRow, ...properties: ('data' | 'flash')[]): boolean {
    const original = this.em.getUnitOfWork().getOriginalEntityData(row) as Record<string, unknown> | undefined;
    if (!original) return true;
    return properties.some((property) => {
      const before = original[property];
      try {
        // The snapshot holds the column as the platform serialises it: JSON text, or the parsed value.
        return JSON.stringify(row[property]) !== (typeof before === 'string' ? before : JSON.stringify(before));
      } catch {
        return true; // a BigInt or a cycle: changed, and the check that follows says how
      }
    });
  }

  /** True when the managed row differs from what was loaded (in-place changes included). */
  hasChanges(): boolean {
    const row = this.row;
    if (!row || this.isNew) return false;
    const comparator = this.em.getComparator();
    const original = this.em.getUnitOfWork().getOriginalEntityData(row);
    if (!original) return true;
    const diff = comparator.getEntityComparator(this.config.model.meta.class)(
      original as any,
      comparator.prepareEntity(row) as any,
    );
    return Object.keys(diff).length > 0;
  }

  /** After the route succeeded: features act, checks pass, flush or commit, then cookie and events. */
  finish(): Promise<void> {
    return this.save();
  }

  /**
   * Commits what the request did so far, then sends the cookie and emits the
   * events; runs at the end of every request, and earlier when a route calls
   * ctx.session.save().  One at a time: a save() made during another waits.
   */
  save(): Promise<void> {
    const run = () => guardCommit(this.em, () => this.#commit());
    this.#saving = this.#saving ? this.#saving.then(run, run) : run();
    return this.#saving;
  }

  #saving: Promise<void> | undefined;

  async #commit(): Promise<void> {
    const { em, config, ctx } = this;
    // koa-websocket's context has no response: the data is committed, there is no cookie or Vary to send.
    const responds = ctx.res !== undefined;
    let row = this.row;
    const insert = !!row && this.isNew && (this.#keepRow || this.#holdsData(row));
    if (insert) em.persist(row!);
    else if (row && this.isNew) row = undefined; // a clean new session: nothing to commit
    if (row) {
      for (const { feature, property } of this.features) await feature.beforeCommit?.(embeddedIn(row!, property), this);
      // Only what is written is checked: a request that changed nothing never fails here.
      // What set() and flash() stored was checked there; what the route got may have changed in place since.
      if (this.dataWritten || (this.handedOut && (insert || this.#columnsChanged(row, 'data', 'flash')))) {
        if (this.handedOut) assertStorableColumns(row.data, row.flash);
        const size = storedSize(row.data, row.flash);
        if (size > config.maxSize) {
          throw new SessionDataError(
            `the session would store ${size} bytes, over the maxSize limit of ${config.maxSize}; nothing was saved`,
          );
        }
      }
    }
    // Checked before the commit, so a cookie that cannot be sent stops the commit.
    // (afterCommit may still ask for a cookie: a renewal offer; it is checked when written.)
    const sendsCookie = () => responds && !!row && (insert || this.#stale || this.sendCookie);
    const removal = responds ? this.#removal : undefined;
    if (sendsCookie()) this.#secureFlag(this.#cookieSettings(), false);
    else if (removal) this.#secureFlag(removal, true);
    try {
      // Deferred statements need the transaction the default mode otherwise lets the flush open.
      if (this.#deferred.length && !em.isInTransaction()) await recordingCheckouts(em, () => em.begin());
      for (const statement of this.#deferred) await statement(em);
      if (em.isInTransaction()) await em.commit();
      else await writeSession(em, config.model.meta, config.statements, (row) => this.#merge(row));
    } catch (error) {
      throw isConflict(error) ? new SessionConflictError({ cause: error }) : error;
    }
    const events = this.#events;
    if (insert) {
      this.isNew = false;
      if (!events.some(([name]) => name === 'session:regenerated'))
        events.push(['session:created', { ctx, id: row!.id }]);
    }
    // Targeted updates of session metadata (read extensions, renewal offers) run on their own, after the
    // commit: a request never fails because a parallel one won such an update, whatever the isolation level.
    if (row) {
      for (const { feature, property } of this.features) {
        try {
          await feature.afterCommit?.(embeddedIn(row, property), this);
        } catch (error) {
          if (!isConflict(error)) throw error;
        }
      }
    }
    let header: string | undefined;
    if (sendsCookie()) {
      const settings = this.#cookieSettings();
      header = buildSetCookie(
        settings,
        config.codec.encode(this.#payload(settings)),
        this.#secureFlag(settings, false),
        this.now,
      );
      this.#hadCookie = true;
    } else if (removal) {
      header = buildSetCookie(removal, null, this.#secureFlag(removal, true), this.now);
      this.#hadCookie = false;
    }
    if (header) writeSetCookie(ctx, config.settings.cookieName, header);
    if (responds && (this.#used || header)) varyOnCookie(ctx);
    this.#committed();
    for (const [name, event] of events) ctx.app.emit(name, event);
  }

  /** What one commit wrote is done: a later save() commits only what changed after it. */
  #committed(): void {
    this.dataWritten = this.handedOut = this.written = this.sendCookie = this.#stale = this.#keepRow = false;
    this.#removal = this.replacedId = undefined;
    this.#events = [];
    this.#deferred = [];
  }

  /**
   * After the route (or finish) failed: nothing is written, no cookie goes out,
   * no event.  An error page of a route that used the session depends on the
   * cookie too: Vary: Cookie goes on the response, for an error handler that
   * keeps headers, and on the error's headers, which Koa's own handler sets
   * after it clears the response's.
   */
  async abort(error: unknown): Promise<void> {
    if (this.#used && this.ctx.res) {
      this.ctx.vary('Cookie');
      if (error instanceof Error) {
        const carrier = error as Error & { headers?: Record<string, string | string[]> };
        const headers = { ...carrier.headers };
        const vary = Object.keys(headers).find((name) => name.toLowerCase() === 'vary');
        if (!vary) headers.Vary = 'Cookie';
        else if (!/(^|,)\s*(cookie|\*)\s*(,|$)/i.test(String(headers[vary])))
          headers[vary] = `${headers[vary]}, Cookie`;
        try {
          carrier.headers = headers;
        } catch {
          // A frozen error keeps its headers; the response's Vary still serves handlers that keep it.
        }
      }
    }
    if (this.em.isInTransaction()) await rollbackTransaction(this.em);
  }

  /** A new session is written only once it holds something (lazy sessions); settings are not data. */
  #holdsData(row: SessionRow): boolean {
    for (const _ in row.data) return true;
    for (const _ in row.flash) return true;
    return this.features.some(({ feature, property }) => feature.holdsData?.(embeddedIn(row, property)) ?? false);
  }

  /** The cookie's payload: the token, the renewal id, and this session's own Path and Domain if it has them. */
  #payload(settings: CookieSettings): Buffer {
    const parts = [this.#token!];
    if (this.cookieExtra) parts.push(this.cookieExtra);
    const carried = this.config.carried?.encode(settings, this.config.settings);
    // Only after a complete fixed part, where start() looks for it.
    if (carried && parts.reduce((length, part) => length + part.length, 0) === this.config.payloadLength)
      parts.push(carried);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** This session's cookie attributes (per-session ones with ConfigurableCookie). */
  #cookieSettings(): CookieSettings {
    if (!this.config.configurableCookie) return this.config.settings;
    return {
      cookieName: this.config.settings.cookieName,
      cookieMaxAge: this.setting('cookieMaxAge'),
      cookiePath: this.setting('cookiePath'),
      cookieDomain: this.setting('cookieDomain'),
      cookieSecure: this.setting('cookieSecure'),
      cookieHttpOnly: this.setting('cookieHttpOnly'),
      cookieSameSite: this.setting('cookieSameSite'),
    };
  }

  /** The Secure attribute for this request; throws when the cookie cannot be sent at all. */
  #secureFlag(settings: CookieSettings, removal: boolean): boolean {
    const { ctx } = this;
    if (ctx.headerSent) {
      throw new SessionError(
        'the session changed after the response headers were sent, so its cookie cannot be written; nothing was saved',
      );
    }
    const secure = settings.cookieSecure === 'auto' ? ctx.secure : settings.cookieSecure;
    // A cookie that reached us over plain HTTP is not a Secure one: remove it as it is.
    if (removal) return secure && ctx.secure;
    if (secure && !ctx.secure) {
      throw new SessionError(
        'cookieSecure is true but this request is not HTTPS, so the cookie cannot be sent; nothing was saved. ' +
          'Behind a TLS-terminating proxy set app.proxy = true, or use cookieSecure: "auto"',
      );
    }
    if (!secure && settings.cookieSameSite === 'none') {
      // cookieSecure 'auto' on plain HTTP: browsers drop SameSite=None without Secure, so the login would silently not
      // stick.
      throw new SessionError(
        'cookieSameSite is "none", which browsers accept only on a Secure cookie, but this request is not HTTPS, so ' +
          'the cookie would be dropped; nothing was saved. Behind a TLS-terminating proxy set app.proxy = true, or ' +
          'use cookieSameSite "lax"',
      );
    }
    return secure;
  }
}

function isConflict(error: unknown): boolean {
  return (
    error instanceof OptimisticLockError ||
    error instanceof DeadlockException ||
    error instanceof LockWaitTimeoutException
  );
}
