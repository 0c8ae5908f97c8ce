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

declare module 'koa' {
  interface ExtendableContext {
    /** This request's session (koa-mikro-session). */
    get session(): Session;
    /** null ends the session (as invalidate()); a plain object replaces its data. */
    set session(value: Session | Record<string, unknown> | null | undefined);
    /** This request's EntityManager, forked by koa-mikro-session (option emKey). */
    em: EntityManager;
  }
}
