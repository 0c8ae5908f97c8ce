// Compile-time checks of ctx.em without a Register augmentation (this project declares none).
import { defineEntity, p, type EntityManager } from '@mikro-orm/core';
import type { Context, ExtendableContext } from 'koa';
import type { Equal, IsAny } from './equal.js';

const Item = defineEntity({ name: 'Item', properties: { id: p.integer().primary() } });

export function route(ctx: Context, extendable: ExtendableContext): void {
  // Unregistered, ctx.em is MikroORM's driver-less EntityManager, exactly.
  const exact: Equal<typeof ctx.em, EntityManager> = true;
  const alsoExact: Equal<typeof extendable.em, EntityManager> = true;
  ctx.em.persist({} as object);
  // @ts-expect-error the driver-less EntityManager has no query builder
  ctx.em.createQueryBuilder(Item);
  // No emKey registered: nothing but em is typed.
  const untyped: IsAny<typeof ctx.db> = true;
  // @ts-expect-error no property db
  void extendable.db;
  void [exact, alsoExact, untyped];
}
