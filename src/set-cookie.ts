import type { Context } from 'koa';
import { stringifySetCookie } from 'cookie';
import { ConfigurationError } from './errors.js';
import { unwritable, type Settings } from './settings.js';

/**
 * Builds and writes the session's Set-Cookie header.  Written here rather
 * than through ctx.cookies because the `cookies` library turns maxAge into
 * Expires only: Max-Age is what browsers honour first, and it does not depend
 * on the client's clock.
 */
export type CookieSettings = Pick<
  Settings,
  'cookieName' | 'cookieMaxAge' | 'cookiePath' | 'cookieDomain' | 'cookieSecure' | 'cookieHttpOnly' | 'cookieSameSite'
>;

/** `value` null builds the removal of the cookie. */
export function buildSetCookie(settings: CookieSettings, value: string | null, secure: boolean, now: number): string {
  const remove = value === null;
  const maxAge = remove ? 0 : settings.cookieMaxAge;
  return stringifySetCookie({
    name: settings.cookieName,
    value: remove ? '' : value,
    maxAge: maxAge ?? undefined,
    expires: maxAge === null ? undefined : new Date(remove ? 0 : now + maxAge * 1000),
    path: settings.cookiePath,
    domain: settings.cookieDomain ?? undefined,
    secure,
    httpOnly: settings.cookieHttpOnly,
    // Only a removal gets here without Secure for SameSite=None (the context refuses to send such a cookie):
    // browsers would drop the attribute pair, and the cookie with it, so the removal goes without SameSite.
    sameSite: (settings.cookieSameSite === 'none' && !secure ? undefined : settings.cookieSameSite) || undefined,
  });
}

// The session's response headers go on Node's response directly.  Koa's
// ctx.response.get() copies every header to read one, and ctx.set() and
// ctx.vary() add their checks and the `vary` package's parsing of a header
// that is nearly always absent: about 4 k instructions of a new session's
// 340 k (BENCHMARKS.md, "Issue 12, fourth step").  The callers check that the
// headers are not sent yet (the context refuses a cookie then).

/** Replaces any Set-Cookie of the same name already on the response, and keeps the response out of shared caches. */
export function writeSetCookie(ctx: Context, name: string, header: string): void {
  const prefix = `${name}=`;
  const existing = ctx.res.getHeader('Set-Cookie');
  const others = (Array.isArray(existing) ? existing : existing ? [String(existing)] : []).filter(
    (line) => !line.startsWith(prefix),
  );
  ctx.res.setHeader('Set-Cookie', [...others, header]);
  ctx.res.setHeader('Cache-Control', 'no-store');
}

/** Vary: Cookie, added to a Vary the response has already (as ctx.vary() would), once the headers are not sent. */
export function varyOnCookie(ctx: Context): void {
  if (ctx.headerSent) return;
  if (ctx.res.hasHeader('Vary')) ctx.vary('Cookie');
  else ctx.res.setHeader('Vary', 'Cookie');
}

/**
 * Start-up check: every cookie setting can be written into a header.  The
 * zod schema gives the friendly messages; this catches what it does not
 * cover, with the rules of the serializer that will write the header.
 */
export function assertWritable(settings: CookieSettings): void {
  const problem = unwritable(settings);
  if (problem) throw new ConfigurationError(`invalid option ${problem}`);
}
