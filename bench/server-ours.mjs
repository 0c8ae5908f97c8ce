// Contender 2: koa-mikro-session (../dist), in the mode named by $MODE:
//   default       no feature, transaction: false
//   lazy          lazy: true (routes that use the session await ctx.session.load())
//   idle-not-due  IdleTimeout 1800 s, extensionDelay 600 s: reads of a fresh session never extend
//   idle-due      IdleTimeout 1800 s, every read extends: the clock moves 1 s forward per request
import Koa from 'koa';
import { countRequests, importLibrary, initOrm, serve, SECRET_KEYS } from './common.mjs';
import { createHash } from 'node:crypto';

const mode = process.env.MODE ?? 'default';
const { defineSessionEntity, session, IdleTimeout } = await importLibrary();
const idle = mode.startsWith('idle');
const Session = defineSessionEntity({
  tableName: `bench_kms_${mode.replace(/-/g, '_')}`,
  features: idle ? [IdleTimeout] : [],
});
const orm = await initOrm([Session]);
await orm.schema.refresh();

// A 32-byte key derived from the shared bench secret, base64url as generateSecretKey() prints.
const secret = createHash('sha256').update(SECRET_KEYS[0]).digest('base64url');
let ticks = 0;
const options = { orm, entity: Session, secret, lazy: mode === 'lazy' };
if (mode === 'idle-not-due') Object.assign(options, { idleTimeout: 1800, extensionDelay: 600 });
if (mode === 'idle-due') Object.assign(options, { idleTimeout: 1800, clock: () => Date.now() + ticks * 1000 });

const app = new Koa();
app.use(countRequests(() => ticks++));
app.use(session(options));
app.use(async (ctx) => {
  const s = ctx.session;
  switch (ctx.path) {
    case '/ignore':
      ctx.body = 'ok';
      return;
    case '/read':
      await s.load();
      ctx.body = String(s.get('n'));
      return;
    case '/write':
    case '/new':
      await s.load();
      s.set('n', (s.get('n') ?? 0) + 1);
      ctx.body = 'ok';
      return;
    default:
      ctx.status = 404;
  }
});
// A lost race on the same session is a 409 (SessionConflictError); keep it off stderr.
app.silent = true;

serve(app.callback(), () => orm.close(true));
