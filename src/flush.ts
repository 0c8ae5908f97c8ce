import type { EntityManager, EntityMetadata, EventSubscriber, FlushEventArgs, MikroORM, Transaction } from '@mikro-orm/core';

/**
 * The end-of-request flush, without MikroORM's BEGIN/COMMIT when the session
 * row is all it writes.
 *
 * MikroORM wraps every flush in a transaction.  When the only change of a
 * request is the session row (the common case: a route that stored a value),
 * that flush is one INSERT, UPDATE or DELETE, which the database applies
 * atomically on its own; the transaction adds two round trips and nothing
 * else.  MikroORM's switch for this, `implicitTransactions: false`, is global
 * and would also un-wrap the app's multi-statement flushes, so the decision is
 * made per flush instead: in onFlush, the one moment MikroORM has computed the
 * change sets and not yet opened its transaction.  If the session row is the
 * only change set, the flush is handed the driver's autocommit client as its
 * "transaction context", so MikroORM sees no need to begin one; in every
 * other case (app entities changed too, a collection changed, an explicit or
 * request-wide transaction is open, a row-level-security session context is
 * set) the flush runs exactly as MikroORM would run it.
 */
const sessionOnly = new WeakMap<EntityManager, EntityMetadata>();

const subscriber: EventSubscriber = {
  onFlush({ em, uow }: FlushEventArgs): void {
    const meta = sessionOnly.get(em);
    if (!meta) return;
    sessionOnly.delete(em);
    const changeSets = uow.getChangeSets();
    if (changeSets.length !== 1 || changeSets[0].meta !== meta || uow.getCollectionUpdates().length > 0) return;
    const client = autocommitClient(em);
    if (client) em.setTransactionContext(client);
  },
};

/** Once per ORM (registering twice is a no-op): lets flushSessionChanges() decide per flush. */
export function watchFlushes(orm: MikroORM): void {
  orm.em.getEventManager().registerSubscriber(subscriber);
}

/** em.flush(), with no BEGIN/COMMIT if the flush turns out to write only a row of `meta`. */
export async function flushSessionChanges(em: EntityManager, meta: EntityMetadata): Promise<void> {
  // A session context (row-level security) is applied by the transaction MikroORM opens: keep it.
  if (em.isInTransaction() || em.getSessionContext()) return em.flush();
  sessionOnly.set(em, meta);
  try {
    await em.flush();
  } finally {
    sessionOnly.delete(em);
  }
}

/** The SQL drivers' Kysely instance: queries given it run on a pooled connection in autocommit. */
function autocommitClient(em: EntityManager): Transaction | undefined {
  const connection = em.getConnection('write') as { getClient?: () => Transaction };
  return typeof connection.getClient === 'function' ? connection.getClient() : undefined;
}
