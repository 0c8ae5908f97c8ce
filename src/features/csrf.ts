import { timingSafeEqual } from 'node:crypto';
import { defineEntity, p } from '@mikro-orm/core';
import type { Middleware } from 'koa';
import { ConfigurationError } from '../errors.js';
import { secureRandom } from '../random.js';
import { defineFeature, featureContextOf, type Feature, type FeatureContext } from './feature.js';

/** CSRF: a synchronizer token in its own column (OWASP's synchronizer token pattern). */
export class Csrf {
  csrfToken: string | null = null;
}

defineEntity({
  class: Csrf,
  embeddable: true,
  properties: { csrfToken: p.string().length(43).nullable() },
});

export const csrfFeature: Feature<Csrf> = defineFeature({
  name: 'Csrf',
  property: 'csrf',
  embeddable: Csrf,
  holdsData: (embedded) => !!embedded.csrfToken,
});

function embedded(context: FeatureContext, api: string): Csrf | undefined {
  const found = context.part(csrfFeature, api);
  context.use(api);
  return found;
}

/** The current token, made (and stored) if the session has none. */
export function getCsrfToken(context: FeatureContext): string {
  return embedded(context, 'getCsrfToken()')?.csrfToken || newCsrfToken(context);
}

/** A fresh random token (256 bits) replacing the current one. */
export function newCsrfToken(context: FeatureContext): string {
  embedded(context, 'newCsrfToken()');
  if (!context.row) context.createRow();
  const token = secureRandom(32).toString('base64url');
  context.part(csrfFeature, 'newCsrfToken()')!.csrfToken = token;
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
      const context = featureContextOf(ctx);
      if (!context) throw new ConfigurationError('csrfProtection() must come after session()');
      await context.load();
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
