// koa-csrf 5 ships no types: the part of its API the integration test uses.
declare module 'koa-csrf' {
  import type { Context, Middleware } from 'koa';

  interface CsrfOptions {
    errorHandler?: (ctx: Context) => unknown;
    excludedMethods?: string[];
    disableQuery?: boolean;
    ignoredPathGlobs?: string[];
  }

  /** The middleware; the token for forms is ctx.state._csrf, the secret ctx.session.secret. */
  function CSRF(options?: CsrfOptions): Middleware;
  export = CSRF;
}
