import type { EntityManager } from '@mikro-orm/core';
import type { Context } from 'koa';

/** The columns every session row has, whatever features it embeds. */
export interface SessionRow {
  /** SHA-256 (hex) of the random token the cookie carries. */
  id: string;
  /** Creation time, integer seconds since the epoch. */
  created: number;
  /** Optimistic-lock version: a concurrent change of the same row fails instead of being lost. */
  version: number;
  /** The key/value data routes read and write. */
  data: Record<string, unknown>;
  /** Flash messages by queue, kept apart from `data` so clear() keeps them. */
  flash: Record<string, unknown[]>;
}

/**
 * The keys an app stores in its sessions, declared once by augmentation:
 *
 *   declare module 'koa-mikro-session' {
 *     interface SessionData { cart: { sku: string; qty: number }[]; theme: 'dark' | 'light' }
 *   }
 *
 * `get` and `set` are then typed by it.  Undeclared apps may use any key.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface SessionData {}

/** The keys of SessionData, or any string while it declares none. */
export type SessionKey = keyof SessionData extends never ? string : Extract<keyof SessionData, string>;
/** The value type stored under `K`. */
export type SessionValue<K> = K extends keyof SessionData ? SessionData[K] : unknown;

/**
 * The app's choices for the request's EntityManager, declared once by augmentation:
 *
 *   import type { EntityManager } from '@mikro-orm/postgresql';
 *   declare module 'koa-mikro-session' {
 *     interface Register { em: EntityManager; emKey: 'db' }
 *   }
 *
 * `em` is its type (the driver's EntityManager, so ctx.em.createQueryBuilder()
 * compiles); `emKey` the property of ctx that holds it, which must match the
 * option emKey.  Both are optional: by default ctx.em is MikroORM's
 * driver-less EntityManager.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface Register {}

/** The type of the request's EntityManager: Register's `em`, or the driver-less EntityManager. */
export type RegisteredEntityManager = Register extends { em: infer E } ? E : EntityManager;
/** The property of ctx that holds it: Register's `emKey`, or 'em'. */
export type RegisteredEmKey = Register extends { emKey: infer K extends string } ? K : 'em';
/**
 * What the option emKey accepts: the registered name, so the type and the option can't drift apart; any name otherwise.
 */
export type EmKeyOption = Register extends { emKey: infer K extends string } ? K : string;

/**
 * The EntityManager's member of Koa's context, named by RegisteredEmKey.  A
 * mapped type, because an interface member's name can't come from a type;
 * Koa's context interface extends it instead.
 */
export type EntityManagerContext = {
  /** This request's EntityManager, forked by koa-mikro-session (option emKey). */
  [K in RegisteredEmKey]: RegisteredEntityManager;
};

/** Payload of `session:invalid-cookie` and `session:crypto-error`; never carries the cookie value. */
export interface InvalidCookieEvent {
  ctx: Context;
  reason: 'malformed' | 'unknown-session' | 'unknown-key' | 'forged';
}

/** Payload of the lifecycle events; `id` is the non-secret row id, never the token. */
export interface SessionEvent {
  ctx: Context;
  id: string;
  /** session:expired: 'idle' or 'absolute'; session:destroyed: why the row was deleted. */
  reason?: string;
  /** session:regenerated: the id the session had before. */
  previousId?: string;
}
