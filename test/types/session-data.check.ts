// Compile-time checks (run by `npm run typecheck`): the public types say what the docs say.
import { defineEntity, p } from '@mikro-orm/core';
import type { Context } from 'koa';
import { SessionBase } from '../../src/index.js';

declare module '../../src/index.js' {
  interface SessionData {
    cart: { sku: string; qty: number }[];
    theme: 'dark' | 'light';
  }
}

export const AppSession = defineEntity({
  name: 'AppSession',
  extends: SessionBase,
  properties: { note: p.string().nullable() },
});

export function route(ctx: Context): void {
  const cart = ctx.session.get('cart');
  cart?.push({ sku: 'A1', qty: 1 });
  ctx.session.set('theme', 'dark');
  // @ts-expect-error a value of the wrong type for a declared key
  ctx.session.set('theme', 'blue');
  // @ts-expect-error an undeclared key
  ctx.session.get('nope');
  const created: number = ctx.session.created;
  const maxAge: number | null = ctx.session.settings.cookieMaxAge;
  void created;
  void maxAge;
  ctx.em.persist({} as object);
}

export function row(entity: InstanceType<(typeof AppSession)['class']>): string {
  const version: number = entity.version;
  void version;
  return entity.id + String(entity.note);
}
