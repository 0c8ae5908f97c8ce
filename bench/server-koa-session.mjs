// Contender 3: koa-session (signed cookies, its defaults) with a minimal external store over pg.
import { koaSessionApp, newPool, serve } from './common.mjs';

const pool = newPool();
await pool.query(`drop table if exists bench_koa_session`);
await pool.query(
  `create table bench_koa_session (sid text primary key, sess json not null, expire timestamptz not null)`,
);

const store = {
  async get(key) {
    const { rows } = await pool.query('select sess from bench_koa_session where sid = $1 and expire > now()', [key]);
    return rows[0]?.sess;
  },
  async set(key, sess, maxAge) {
    await pool.query(
      `insert into bench_koa_session (sid, sess, expire) values ($1, $2, now() + $3 * interval '1 millisecond')
       on conflict (sid) do update set sess = excluded.sess, expire = excluded.expire`,
      [key, JSON.stringify(sess), typeof maxAge === 'number' ? maxAge : 86_400_000],
    );
  },
  async destroy(key) {
    await pool.query('delete from bench_koa_session where sid = $1', [key]);
  },
};

const app = koaSessionApp(store);
serve(app.callback(), () => pool.end());
