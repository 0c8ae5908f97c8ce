// Compile-time checks: `Register { emKey: 'db' }` moves the typed EntityManager to ctx.db (option emKey: 'db').
import { defineEntity, p } from '@mikro-orm/core';
import type { EntityManager, MikroORM } from '@mikro-orm/mariadb';
import Koa, { type Context, type ExtendableContext, type Middleware } from 'koa';
import { defineSessionEntity, session } from 'koa-mikro-session';
import type { Equal, IsAny } from '../equal.js';

declare module 'koa-mikro-session' {
  interface Register {
    em: EntityManager;
    emKey: 'db';
  }
}

const Item = defineEntity({ name: 'Item', properties: { id: p.integer().primary() } });

export async function route(ctx: Context, extendable: ExtendableContext): Promise<void> {
  const exact: Equal<typeof ctx.db, EntityManager> = true;
  const alsoExact: Equal<typeof extendable.db, EntityManager> = true;
  const count: number = await ctx.db.createQueryBuilder(Item).getCount();
  // The library no longer types ctx.em: on Context it is Koa's catch-all any, on ExtendableContext absent.
  const untyped: IsAny<typeof ctx.em> = true;
  // @ts-expect-error no property em
  void extendable.em;
  void [exact, alsoExact, count, untyped];
}

export const middleware: Middleware = async (ctx, next) => {
  await ctx.db.createQueryBuilder(Item).getCount();
  await next();
};

// The README's set-up: the runtime option names the same key.
export function app(orm: MikroORM, secret: string): Koa {
  const app = new Koa();
  app.use(session({ orm, entity: defineSessionEntity(), secret, emKey: 'db' }));
  // @ts-expect-error the option must name the registered key
  session({ orm, entity: defineSessionEntity(), secret, emKey: 'em' });
  app.use(async (ctx) => {
    ctx.body = await ctx.db.createQueryBuilder(Item).getCount();
  });
  return app;
}
