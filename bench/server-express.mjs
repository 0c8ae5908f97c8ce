// Contender 4: Express 5 + express-session + connect-pg-simple (resave: false,
// saveUninitialized: false, touch on: their recommended settings).
import express from 'express';
import expressSession from 'express-session';
import connectPgSimple from 'connect-pg-simple';
import { newPool, serve, stats, statsBody, SECRET_KEYS } from './common.mjs';

const pool = newPool();
await pool.query('drop table if exists bench_express_session');
const PgStore = connectPgSimple(expressSession);
const store = new PgStore({
  pool,
  tableName: 'bench_express_session',
  createTableIfMissing: true,
  pruneSessionInterval: false,
});

const app = express();
app.disable('x-powered-by');
app.use((req, res, next) => {
  if (req.path === '/__stats') {
    res.type('json').send(statsBody());
    return;
  }
  stats.requests++;
  next();
});
app.use(expressSession({ store, secret: SECRET_KEYS[0], resave: false, saveUninitialized: false }));
app.get('/ignore', (req, res) => {
  res.send('ok');
});
app.get('/read', (req, res) => {
  res.send(String(req.session.n));
});
app.get(['/write', '/new'], (req, res) => {
  req.session.n = (req.session.n ?? 0) + 1;
  res.send('ok');
});

serve(app, async () => {
  await store.close();
  await pool.end().catch(() => {});
});
