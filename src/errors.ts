/**
 * Every error the library throws is a `SessionError`, so an app can tell ours
 * from its own with one `instanceof`.  Messages say what is wrong and how to fix it.
 */
export class SessionError extends Error {
  override name = 'SessionError';
}

/** Thrown synchronously by `session()` for a bad secret, option or entity. */
export class ConfigurationError extends SessionError {
  override name = 'ConfigurationError';
}

/** A route used the API of a feature whose embeddable the session entity lacks. */
export class FeatureNotEnabledError extends SessionError {
  override name = 'FeatureNotEnabledError';
  constructor(
    readonly feature: string,
    api: string,
  ) {
    super(
      `${api} needs the ${feature} feature: add the ${feature} embeddable to the session entity ` +
        `(defineSessionEntity({ features: [${feature}] })) and update the schema`,
    );
  }
}

/** A value that cannot be stored, or a session over its size limit. Status 500: a programming error. */
export class SessionDataError extends SessionError {
  override name = 'SessionDataError';
}

/** The session was used before `await ctx.session.load()` with `lazy: true`. */
export class SessionNotLoadedError extends SessionError {
  override name = 'SessionNotLoadedError';
  constructor(api: string) {
    super(
      `ctx.session.${api} was used before the session was loaded: with lazy: true, call await ctx.session.load() first`,
    );
  }
}

/**
 * A concurrent request changed the same session (optimistic lock, serialization
 * failure or deadlock), so this request's transaction was rolled back and
 * nothing it did was written.  Koa answers it as 409; the client may retry.
 */
export class SessionConflictError extends SessionError {
  override name = 'SessionConflictError';
  readonly status = 409;
  readonly statusCode = 409;
  readonly expose = true;
  constructor(options?: { cause?: unknown }) {
    super('The session was changed by a concurrent request; nothing was saved. Please retry.', options);
  }
}

/** A per-session settings change that is not allowed or not valid (status 500: a programming error). */
export class SettingsError extends SessionError {
  override name = 'SettingsError';
}

/**
 * The database could not be reached while the session was loaded or saved: the
 * connection was refused, dropped or terminated, or no connection became free
 * in time.  Nothing of the request was written.  Koa answers it as 503 (the
 * message stays on the server: `expose` is false), so clients and load
 * balancers see "try again" rather than a bug; `cause` is the driver's error.
 */
export class SessionStoreUnavailableError extends SessionError {
  override name = 'SessionStoreUnavailableError';
  readonly status = 503;
  readonly statusCode = 503;
  readonly expose = false;
  constructor(action: 'load' | 'save', options?: { cause?: unknown }) {
    const reason = (options?.cause as Error | undefined)?.message;
    super(
      `The session could not be ${action === 'load' ? 'loaded' : 'saved'} because the database is unreachable` +
        `${reason ? ` (${reason})` : ''}; nothing was saved. Please retry.`,
      options,
    );
  }
}
