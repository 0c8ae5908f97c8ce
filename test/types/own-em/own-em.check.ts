// Compile-time checks: an app that declares ctx.em on Koa's context itself, as it had to before
// Register existed, still compiles (no TS2717), and its declaration wins.
import { defineEntity, p } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/postgresql';
import type { Context } from 'koa';
import type { Equal } from '../equal.js';

declare module 'koa' {
  interface ExtendableContext {
    em: SqlEntityManager;
  }
}

const Item = defineEntity({ name: 'Item', properties: { id: p.integer().primary() } });

export async function route(ctx: Context): Promise<void> {
  const exact: Equal<typeof ctx.em, SqlEntityManager> = true;
  await ctx.em.createQueryBuilder(Item).getCount();
  void exact;
}
