import type { EntityManager } from '@mikro-orm/core';
import type { Session } from './session.js';

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
/** What the option emKey accepts: the registered name, so the type and the option can't drift apart; any name otherwise. */
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

declare module 'koa' {
  // Inherited rather than declared: an app that still declares its own `em` on
  // ExtendableContext overrides it instead of clashing with it (TS2717).
  interface ExtendableContext extends EntityManagerContext {
    /** This request's session (koa-mikro-session). */
    get session(): Session;
    /** null ends the session (as invalidate()); a plain object replaces its data. */
    set session(value: Session | Record<string, unknown> | null | undefined);
  }
}
