import { timingSafeEqual } from 'node:crypto';
import { defineEntity, p } from '@mikro-orm/core';
import type { Middleware } from 'koa';
import type { SessionContext } from '../context.js';
import { secureRandom } from '../random.js';
import { Session } from '../session.js';
import { FeatureNotEnabledError } from '../errors.js';
import { registerFeature, type Feature } from './feature.js';

/** CSRF: a synchronizer token in its own column (OWASP's synchronizer token pattern). */
export class Csrf {
  csrfToken: string | null = null;
}

defineEntity({
  class: Csrf,
  embeddable: true,
  properties: { csrfToken: p.string().length(43).nullable() },
});

export const csrfFeature: Feature = registerFeature({
  name: 'Csrf',
  property: 'csrf',
  embeddable: Csrf,
  holdsData: (embedded: Csrf) => !!embedded.csrfToken,
});

function embedded(context: SessionContext, api: string): Csrf | undefined {
  const found = context.features.find(({ feature }) => feature === csrfFeature);
  if (!found) throw new FeatureNotEnabledError('Csrf', api);
  context.use(api);
  return (context.row as any)?.[found.property];
}

/** The current token, made (and stored) if the session has none. */
export function getCsrfToken(context: SessionContext): string {
  return embedded(context, 'getCsrfToken()')?.csrfToken || newCsrfToken(context);
}

/** A fresh random token (256 bits) replacing the current one. */
export function newCsrfToken(context: SessionContext): string {
  embedded(context, 'newCsrfToken()');
  const row = context.row ?? context.createRow();
  const found = context.features.find(({ feature }) => feature === csrfFeature)!;
  const token = secureRandom(32).toString('base64url');
  (row as any)[found.property].csrfToken = token;
  context.written = true;
  return token;
}

export interface CsrfOptions {
  /** Request header carrying the token; 'x-csrf-token' by default. */
  header?: string;
  /** Form field carrying the token (needs a body parser before this middleware); '_csrf' by default. */
  field?: string;
  /** Methods that need no token; GET, HEAD, OPTIONS and TRACE by default. */
  safeMethods?: readonly string[];
}

/**
 * Checks the token on unsafe methods and answers 403 when it is missing or
 * wrong.  Put it after session() (and after the body parser for form fields).
 */
export function csrfProtection(options: CsrfOptions = {}): Middleware {
  const header = (options.header ?? 'x-csrf-token').toLowerCase();
  const field = options.field ?? '_csrf';
  const safe = new Set((options.safeMethods ?? ['GET', 'HEAD', 'OPTIONS', 'TRACE']).map((m) => m.toUpperCase()));
  return async function checkCsrfToken(ctx, next) {
    if (!safe.has(ctx.method)) {
      if (!ctx.session) throw new Error('csrfProtection() must come after session()');
      await ctx.session.load();
      const context = Session.contextOf(ctx.session);
      const expected = embedded(context, 'csrfProtection()')?.csrfToken;
      const body = (ctx.request as { body?: Record<string, unknown> }).body;
      const sent = ctx.get(header) || (typeof body?.[field] === 'string' ? (body[field] as string) : '');
      if (!expected || !sent || !sameToken(sent, expected)) {
        ctx.throw(403, 'Invalid or missing CSRF token: reload the page and try again');
      }
    }
    await next();
  };
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
