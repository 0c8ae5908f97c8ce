// Contender 1, the floor: bare Koa with a forked MikroORM EntityManager per
// request (MikroORM's request context) and no session, in the mode named by $MODE:
//   bare     (default) no statement: every route answers 'ok'
//   minimum  the statements the scenario cannot do without, as fixed SQL through
//            the fork's connection, nothing mapped: /ignore and /read one
//            primary-key SELECT, /write a SELECT and an UPDATE, /new one INSERT.
//            The physical minimum of a database session on this ORM: what the
//            library adds is the gap between it and this.
//   design   what this library's design cannot skip, and nothing else (floor-design.mjs).
import Koa from 'koa';
import { RequestContext } from '@mikro-orm/core';
import { createHash, randomBytes } from 'node:crypto';
import { designFloor } from './floor-design.mjs';
import { countRequests, importLibrary, initOrm, serve } from './common.mjs';

const mode = process.env.MODE ?? 'bare';
const { defineSessionEntity } = await importLibrary();
// The same entity as the library's server, so the ORM has the same metadata.
const Session = defineSessionEntity({ tableName: `bench_floor_${mode}` });
const orm = await initOrm([Session]);
const table = `"bench_floor_${mode}"`;
if (mode !== 'bare') await orm.schema.refresh();
const select = `select * from ${table} where id = ?`;
const update = `update ${table} set data = ?, version = version + 1 where id = ? and version = ?`;
const insert = `insert into ${table} (id, created, version, data, flash) values (?, 0, 1, '{"n":1}', '{}')`;
// Each connection's cookie names its own row, as a session id would (the row appears on its first visit).
const idOf = (cookie) =>
  createHash('sha256')
    .update(cookie ?? '')
    .digest('hex');

const design = mode === 'design' ? await designFloor(orm, Session, table) : undefined;

const app = new Koa();
app.use(countRequests());
app.use((ctx, next) => {
  return RequestContext.create(orm.em, () => {
    ctx.em = RequestContext.getEntityManager();
    return next();
  });
});
app.use(async (ctx) => {
  if (design) return design(ctx);
  if (mode === 'minimum') {
    const connection = ctx.em.getConnection();
    if (ctx.path === '/new') {
      await connection.execute(insert, [randomBytes(32).toString('hex')], 'run');
    } else {
      const id = idOf(ctx.get('cookie'));
      const [row] = await connection.execute(select, [id]);
      if (!row) await connection.execute(insert, [id], 'run');
      else if (ctx.path === '/write')
        await connection.execute(update, [JSON.stringify({ n: row.data.n + 1 }), id, row.version], 'run');
    }
  }
  ctx.body = 'ok';
});

serve(app.callback(), () => orm.close(true));
