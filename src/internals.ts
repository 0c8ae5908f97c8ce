import type { Configuration, EntityManager, MikroORM } from '@mikro-orm/core';

/**
 * The MikroORM internals the fast end-of-request write relies on (flush.ts,
 * statements.ts).  None is MikroORM's public API, so a 7.x release may rename,
 * move or re-shape any of them; the peer range `^7.2.1` lets such a release in.
 *
 * They are checked once per ORM, when session() is created: each must be a
 * function, with the parameter count of 7.2.x where the library passes
 * positional arguments (a different count means a different signature).  When
 * any is not as expected the ORM is trusted with none of them: the row is
 * written by the public path, `em.flush()` in MikroORM's own transaction and
 * `em.nativeUpdate()`, and a process warning names what differed.  The fast
 * paths are one piece, tested together on the versions CI runs, so a MikroORM
 * that changed one of them has not been tested with the others either.
 *
 * The primary-key SELECT needs none of them (connection.execute() and em.map()
 * are public), so it stays prepared; only its row is mapped by em.map() then
 * instead of the entity factory.
 */

/** A method the fast paths call, where to find it on a fork, and its parameter count in 7.2.x. */
interface Internal {
  readonly name: string;
  readonly owner: (em: EntityManager) => unknown;
  readonly method: string;
  readonly length?: number;
}

const INTERNALS: readonly Internal[] = [
  // path 1: the row's snapshot, its changes and its column values, as a flush computes them
  { name: 'EntityComparator.prepareEntity', owner: (em) => em.getComparator(), method: 'prepareEntity', length: 1 },
  {
    name: 'EntityComparator.getEntityComparator',
    owner: (em) => em.getComparator(),
    method: 'getEntityComparator',
    length: 1,
  },
  {
    name: 'DatabaseDriver.mapDataToFieldNames',
    owner: (em) => em.getDriver(),
    method: 'mapDataToFieldNames',
    length: 5,
  },
  // the SELECT's row made an entity as findOne() makes it (statements.ts managed())
  { name: 'EntityFactory.create', owner: (em) => em.getEntityFactory(), method: 'create', length: 2 },
  // path 1: the unit of work's bookkeeping, updated as a flush updates it
  { name: 'UnitOfWork.register', owner: (em) => em.getUnitOfWork(), method: 'register', length: 3 },
  {
    name: 'UnitOfWork.getOriginalEntityData',
    owner: (em) => em.getUnitOfWork(),
    method: 'getOriginalEntityData',
    length: 1,
  },
  { name: 'UnitOfWork.unsetIdentity', owner: (em) => em.getUnitOfWork(), method: 'unsetIdentity', length: 1 },
  { name: 'UnitOfWork.getIdentityMap', owner: (em) => em.getUnitOfWork(), method: 'getIdentityMap' },
  { name: 'UnitOfWork.getPersistStack', owner: (em) => em.getUnitOfWork(), method: 'getPersistStack' },
  { name: 'UnitOfWork.getRemoveStack', owner: (em) => em.getUnitOfWork(), method: 'getRemoveStack' },
  { name: 'UnitOfWork.getOrphanRemoveStack', owner: (em) => em.getUnitOfWork(), method: 'getOrphanRemoveStack' },
  // path 2: a session-only flush handed the driver's autocommit client in onFlush
  { name: 'UnitOfWork.getChangeSets', owner: (em) => em.getUnitOfWork(), method: 'getChangeSets' },
  { name: 'UnitOfWork.getCollectionUpdates', owner: (em) => em.getUnitOfWork(), method: 'getCollectionUpdates' },
  { name: 'EntityManager.setTransactionContext', owner: (em) => em, method: 'setTransactionContext', length: 1 },
  { name: 'EntityManager.resetTransactionContext', owner: (em) => em, method: 'resetTransactionContext' },
  { name: 'Connection.getClient', owner: (em) => em.getConnection('write'), method: 'getClient' },
  // both: who else listens to the events path 1 skips, or could add to path 2's flush
  { name: 'EventManager.getSubscribers', owner: (em) => em.getEventManager(), method: 'getSubscribers' },
];

/** The stacks path 1 reads and edits: what 7.2.x returns (Sets, and an iterable identity map). */
function stacksAsExpected(em: EntityManager): boolean {
  const uow = em.getUnitOfWork();
  const isSet = (value: unknown) => value instanceof Set;
  const identityMap = uow.getIdentityMap() as unknown as Iterable<unknown> | undefined;
  return (
    isSet(uow.getPersistStack()) &&
    isSet(uow.getRemoveStack()) &&
    isSet(uow.getOrphanRemoveStack()) &&
    typeof identityMap?.[Symbol.iterator] === 'function'
  );
}

/** What differs from 7.2.x; empty when every internal is as expected. */
export function differingInternals(orm: MikroORM): string[] {
  const em = orm.em.fork();
  const differing: string[] = [];
  for (const { name, owner, method, length } of INTERNALS) {
    let fn: unknown;
    try {
      fn = (owner(em) as Record<string, unknown> | undefined)?.[method];
    } catch {
      fn = undefined;
    }
    if (typeof fn !== 'function') differing.push(`${name} is missing`);
    else if (length !== undefined && fn.length !== length)
      differing.push(`${name} takes ${fn.length} parameters, not ${length}`);
  }
  if (differing.length === 0) {
    let expected = false;
    try {
      expected = stacksAsExpected(em);
    } catch {
      // a getter that throws on an empty unit of work is as good as a different one
    }
    if (!expected) differing.push('the UnitOfWork stacks are not Sets');
  }
  return differing;
}

/** The verdict per ORM, by its Configuration: the one object every fork shares with it. */
const verdicts = new WeakMap<Configuration, boolean>();

/** True when the fast paths may run on this ORM.  Checks once per ORM; warns once when they may not. */
export function trustInternals(orm: MikroORM): boolean {
  let trusted = verdicts.get(orm.config);
  if (trusted === undefined) {
    const differing = differingInternals(orm);
    trusted = differing.length === 0;
    verdicts.set(orm.config, trusted);
    if (!trusted) {
      process.emitWarning(
        `koa-mikro-session: this MikroORM's internals differ from 7.2.x (${differing.join('; ')}); ` +
          "the session row is written with em.flush() in MikroORM's own transaction, which is correct but slower",
        { code: INTERNALS_WARNING },
      );
    }
  }
  return trusted;
}

/** The verdict trustInternals() reached for the ORM of this EntityManager (a fork or the global one). */
export function trusted(em: EntityManager): boolean {
  return verdicts.get(em.config) === true;
}

/** The code of the process warning emitted when the fast paths are off. */
export const INTERNALS_WARNING = 'KOA_MIKRO_SESSION_INTERNALS';
