// Contender 4b: koa-session (signed cookies, its defaults) with an external store
// over MikroORM: the alternative a MikroORM user has today.  MikroORM's request
// context for Koa (RequestContext.create per request, as its docs recommend), so
// `orm.em` inside a request is that request's fork, and a store of three calls on it:
//   get      em.findOne by primary key (and not expired), returns the row's data
//   set      em.upsert: INSERT … ON CONFLICT ("id") DO UPDATE, executed at once
//   destroy  em.nativeDelete by primary key
// Same ORM options and pool as the floor and the library (common.mjs initOrm).
import { defineEntity, p, RequestContext } from '@mikro-orm/core';
import { initOrm, koaSessionApp, serve } from './common.mjs';

const StoredSession = defineEntity({
  name: 'KoaStoredSession',
  tableName: 'bench_koa_session_mikro',
  properties: {
    id: p.string().primary(),
    data: p.json(),
    // Milliseconds since the epoch, as koa-session counts them (its maxAge is in ms).
    expires: p.bigint('number'),
  },
});

const orm = await initOrm([StoredSession]);
await orm.schema.refresh();

const store = {
  async get(id) {
    const row = await orm.em.findOne(StoredSession, { id, expires: { $gt: Date.now() } });
    return row?.data;
  },
  async set(id, data, maxAge) {
    // Sent at once, even though get() left the row managed in this request's identity map: with
    // MikroORM's default `upsertManaged: true` em.upsert() always runs its statement (with `false`
    // it would only assign the data to the managed entity and wait for a flush).
    await orm.em.upsert(StoredSession, {
      id,
      data,
      expires: Date.now() + (typeof maxAge === 'number' ? maxAge : 86_400_000),
    });
  },
  async destroy(id) {
    await orm.em.nativeDelete(StoredSession, { id });
  },
};

// MikroORM's Koa integration: everything after it (koa-session's load and its commit too) runs in the
// request's context.
const app = koaSessionApp(store, (ctx, next) => RequestContext.create(orm.em, next));
serve(app.callback(), () => orm.close(true));
