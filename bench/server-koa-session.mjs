// Contender 3: koa-session (signed cookies, its defaults) with a minimal external store over pg.
import { koaSessionApp, koaSessionPgStore, newPool, serve } from './common.mjs';

const pool = newPool();
const store = await koaSessionPgStore(pool);

const app = koaSessionApp(store);
serve(app.callback(), () => pool.end());
