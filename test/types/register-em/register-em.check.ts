// Compile-time checks: the README's `Register { em }` augmentation types ctx.em as the driver's EntityManager.
import { defineEntity, p, type EntityManager as CoreEntityManager } from '@mikro-orm/core';
import type { EntityManager, SqlEntityManager } from '@mikro-orm/postgresql';
import type { Context, ExtendableContext, Middleware } from 'koa';
import type { Equal, IsAny } from '../equal.js';

declare module 'koa-mikro-session' {
  interface Register {
    em: EntityManager;
  }
}

const Item = defineEntity({ name: 'Item', properties: { id: p.integer().primary() } });

export async function route(ctx: Context, extendable: ExtendableContext): Promise<void> {
  const exact: Equal<typeof ctx.em, EntityManager> = true;
  const alsoExact: Equal<typeof extendable.em, EntityManager> = true;
  // The point of registering: the SQL drivers' API compiles.
  const rows = await ctx.em.createQueryBuilder(Item).select('*').where({ id: 1 }).getResultList();
  const ids: number[] = rows.map((row) => row.id);
  await ctx.em.execute('select 1');
  // It is still an EntityManager, so code written for the SQL or the driver-less one keeps compiling.
  const sql: SqlEntityManager = ctx.em;
  const plain: CoreEntityManager = ctx.em;
  // No emKey registered: the property is still em.
  const untyped: IsAny<typeof ctx.db> = true;
  // @ts-expect-error no property db
  void extendable.db;
  // @ts-expect-error a typed EntityManager is not any: a missing method is an error
  void ctx.em.getKnex;
  void [exact, alsoExact, ids, sql, plain, untyped];
}

// Koa's other context types see it too.
export const middleware: Middleware = async (ctx, next) => {
  await ctx.em.createQueryBuilder(Item).getCount();
  await next();
};
