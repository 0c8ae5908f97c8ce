// Contender 1, the floor: bare Koa with a forked MikroORM EntityManager per
// request (MikroORM's request context) and no session. Every route answers the same.
import Koa from 'koa';
import { RequestContext } from '@mikro-orm/core';
import { importLibrary, initOrm, serve, stats, statsBody } from './common.mjs';

const { defineSessionEntity } = await importLibrary();
// The same entity as the library's server, so the ORM has the same metadata; its table is never touched.
const Session = defineSessionEntity({ tableName: 'bench_floor_session' });
const orm = await initOrm([Session]);

const app = new Koa();
app.use((ctx, next) => {
  if (ctx.path === '/__stats') { ctx.type = 'json'; ctx.body = statsBody(); return; }
  stats.requests++;
  return RequestContext.create(orm.em, () => {
    ctx.em = RequestContext.getEntityManager();
    return next();
  });
});
app.use((ctx) => { ctx.body = 'ok'; });

serve(app.callback(), () => orm.close(true));
