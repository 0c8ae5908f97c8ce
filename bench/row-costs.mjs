// `npm run bench:row`: what making a new session's row costs, in one process
// without a database.  Issue 12 lists "creating the row without em.create()'s
// per-instance machinery" as a way that looks open; this measures it before
// anyone believes it.  Each way runs in a fresh fork of its own (a request
// has one), 20,000 times after a warm-up, 5 runs interleaved; the best and
// the median µs per call are printed, the fork's own cost first.
//   - the library's way: em.create(…, { persist: false }), then em.persist()
//     at the commit;
//   - the entity's constructor, the values assigned, then em.persist(): the
//     factory (its data copies, the hydrator, the default values) skipped;
//   - both again on an ORM with `propagationOnPrototype: false`.  With
//     MikroORM's default (true), the first assignment of each scalar property
//     of an instance defines a getter and a setter on that instance (the
//     prototype's setters, EntityHelper.defineProperties()), whichever of the
//     two ways assigns it.  The option belongs to the app's ORM, for all of
//     its entities;
//   - both again on the default ORM after session() was created for the
//     entity ("true, shadowed"): session() shadows those setters for the
//     session entity alone (entity.ts plainColumns()), so its rows get plain
//     data properties as with the option off.
// Each setting runs in a process of its own: two ORMs in one process make
// MikroORM's shared code polymorphic, and that alone hid the difference.
import { spawnSync } from 'node:child_process';
import { MikroORM } from '@mikro-orm/sqlite';
import { importLibrary, printPieceCosts } from './common.mjs';

const setting = process.env.ROW_PROPAGATION_ON_PROTOTYPE;
if (setting === undefined) {
  for (const value of ['true', 'true, shadowed', 'false']) {
    const child = spawnSync(process.execPath, [new URL(import.meta.url).pathname], {
      env: { ...process.env, ROW_PROPAGATION_ON_PROTOTYPE: value },
      stdio: 'inherit',
    });
    if (child.status !== 0) process.exit(child.status ?? 1);
  }
  process.exit(0);
}

const N = 20_000;
const RUNS = 5;
const { defineSessionEntity, generateSecretKey, session } = await importLibrary();
const Session = defineSessionEntity({ name: 'RowCostSession', tableName: 'bench_row_cost' });

const orm = await MikroORM.init({
  entities: [Session],
  dbName: ':memory:',
  propagationOnPrototype: setting !== 'false',
});
if (setting === 'true, shadowed') session({ orm, entity: Session, secret: generateSecretKey() });
const values = () => ({ id: 'a'.repeat(64), created: 1_700_000_000, version: 1, data: { n: 1 }, flash: {} });

/** The library's way: the entity factory, then the unit of work at the commit. */
const viaCreate = (em) => {
  const row = em.create(Session, values(), { persist: false });
  em.persist(row);
  return row;
};
/** The entity's constructor and plain assignments: no factory. */
const Row = orm.getMetadata().get(Session.meta.class).class;
const viaConstructor = (em) => {
  const row = Object.assign(new Row(), values());
  em.persist(row);
  return row;
};
const pieces = {
  'the fork alone (every way pays it)': () => orm.em.fork(),
  'em.create(), then em.persist() (the library)': () => viaCreate(orm.em.fork()),
  'constructor + assignment, then em.persist()': () => viaConstructor(orm.em.fork()),
};

// Both ways must make the same managed row, or the comparison says nothing.
{
  const rows = [viaCreate, viaConstructor].map((make) => {
    const em = orm.em.fork();
    const row = make(em);
    const managed =
      em.getUnitOfWork().getPersistStack().has(row) && em.getUnitOfWork().getById(Session, row.id) === row;
    return `${managed} ${JSON.stringify(em.getComparator().prepareEntity(row))}`;
  });
  if (rows[0] !== rows[1]) throw new Error(`row-costs: the ways make different rows: ${rows.join(' ≠ ')}`);
}

printPieceCosts(pieces, {
  calls: N,
  runs: RUNS,
  heading: `propagationOnPrototype: ${setting}; µs per call, a fork included, ${N} calls × ${RUNS} runs, in-process`,
});
await orm.close();
