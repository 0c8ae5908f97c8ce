// `npm run bench:cookie`: what the cookie costs per request, piece by piece, in
// one process without a database (issue 12 asks for the AES-GCM setup and the
// Set-Cookie formatting to be measured).  Each piece runs 20,000 times after a
// warm-up, 5 runs interleaved; the best and the median µs per call are printed.
//   - the library's cookie: AES-GCM encryption of a new session's token, its
//     decryption (a cookie not seen before; a returning one is a Map lookup),
//     the Set-Cookie header built and written on a Koa response;
//   - koa-session's default cookie for comparison: the `cookies` module setting
//     a signed value (keygrip's HMAC under a string key), and verifying one;
//   - the primitives behind both: createCipheriv() and createHmac() with a raw
//     key and with a KeyObject imported once.
import { createCipheriv, createHmac, createSecretKey, randomBytes } from 'node:crypto';
import Koa from 'koa';
import { SECRET_KEYS, inMemoryContext, libraryDist, printPieceCosts } from './common.mjs';

const DIST = libraryDist();
const { CookieCodec, generateSecretKey } = await import(new URL('codec.js', DIST).href);
const { buildSetCookie, writeSetCookie } = await import(new URL('set-cookie.js', DIST).href);
const { resolveSettings } = await import(new URL('settings.js', DIST).href);

const N = 20_000;
const RUNS = 5;
const app = new Koa();
app.keys = SECRET_KEYS;
const context = (cookie) => inMemoryContext(app, 'GET', cookie);

const codec = new CookieCodec(generateSecretKey(), 'session');
const token = randomBytes(16);
// Twice as many values as the codec keeps decrypted (4096, oldest out first): cycling through them, every decode misses.
const values = Array.from({ length: 8192 }, () => codec.encode(randomBytes(16)));
// The library's default cookie settings, as session() resolves them when no option is given.
const settings = resolveSettings({});
const signedCookies = (() => {
  const ctx = context();
  ctx.cookies.set('koa.sess', 'x'.repeat(32), { signed: true });
  return ctx.response
    .get('set-cookie')
    .map((line) => line.split(';')[0])
    .join('; ');
})();
const rawKey = randomBytes(32);
const keyObject = createSecretKey(rawKey);
const iv = randomBytes(12);
const ctxs = Array.from({ length: 64 }, () => context());
const signedCtx = context(signedCookies);
let i = 0;

const pieces = {
  'library: encrypt a new token (AES-GCM)': () => codec.encode(token),
  'library: decrypt a cookie not seen before': () => codec.decode(values[i++ & 8191], 16),
  'library: build the Set-Cookie header': () => buildSetCookie(settings, values[0], false, 0),
  'library: write it on a Koa response': () => writeSetCookie(ctxs[i++ & 63], 'session', 'session=x; Path=/'),
  'koa-session: cookies.set, signed (keygrip)': () =>
    ctxs[i++ & 63].cookies.set('koa.sess', 'x'.repeat(32), { signed: true, overwrite: true }),
  'koa-session: cookies.get, signed (keygrip)': () => signedCtx.cookies.get('koa.sess', { signed: true }),
  'createCipheriv, raw key': () => createCipheriv('aes-256-gcm', rawKey, iv),
  'createCipheriv, KeyObject': () => createCipheriv('aes-256-gcm', keyObject, iv),
  'createHmac, raw key': () => createHmac('sha256', rawKey),
  'createHmac, KeyObject': () => createHmac('sha256', keyObject),
};

printPieceCosts(pieces, {
  calls: N,
  runs: RUNS,
  heading: `µs per call, ${N} calls × ${RUNS} runs, in-process (library: ${new URL(DIST).pathname})`,
});
