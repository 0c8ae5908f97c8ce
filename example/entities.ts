import { defineEntity, p } from '@mikro-orm/core';
// The example uses the library as an app would, by its package name: Node resolves
// 'koa-mikro-session' to this repository's own dist/ (package self-reference),
// and the type-check maps it to src/ (the "paths" of tsconfig.json).
import { AbsoluteTimeout, ConfigurableIdleTimeout, Csrf, defineSessionEntity, Userid } from 'koa-mikro-session';

/**
 * The example's session: a user id (with id regeneration at login), a CSRF
 * token, an idle timeout each session may change (the settings page), and an
 * absolute timeout.
 */
export const Session = defineSessionEntity({
  tableName: 'example_session',
  features: [Userid, Csrf, ConfigurableIdleTimeout, AbsoluteTimeout],
});

/** An app row written in the same commit as the session: checking out stores the order and empties the cart. */
export const Order = defineEntity({
  name: 'Order',
  tableName: 'example_order',
  properties: {
    id: p.integer().primary().autoincrement(),
    userid: p.integer().index(),
    items: p.json<{ sku: string; qty: number }[]>(),
    total: p.integer(), // cents
    created: p.integer(), // seconds since the epoch
  },
});

/**
 * Every entity of the example: the ORM config lists them all, or schema and migration tools would drop their tables.
 */
export const entities = [Session, Order];
