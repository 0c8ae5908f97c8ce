export { session, type SessionOptions } from './middleware.js';
export { Session, type FlashOptions } from './session.js';
export { defineSessionEntity, SessionBase, type SessionEntity, type SessionEntityOptions, type SessionRow } from './entity.js';
export { generateSecretKey } from './cookie.js';
export type { InvalidCookieEvent } from './context.js';
export type { Settings } from './settings.js';
export type { SessionData, SessionKey, SessionValue } from './types.js';
export {
  SessionError,
  ConfigurationError,
  FeatureNotEnabledError,
  SessionDataError,
  SessionNotLoadedError,
  SessionConflictError,
} from './errors.js';
