export { session, type SessionMiddleware } from './middleware.js';
export type { SessionOptions } from './config.js';
export { Session, type FlashOptions } from './session.js';
export { defineSessionEntity, SessionBase, type SessionEntity, type SessionEntityOptions } from './entity.js';
export { generateSecretKey } from './codec.js';
export { SessionSettings, type EditableSettings, type Settings } from './settings.js';
export type {
  InvalidCookieEvent,
  Register,
  SessionData,
  SessionEvent,
  SessionKey,
  SessionRow,
  SessionValue,
} from './types.js';
export {
  Userid,
  Csrf,
  csrfProtection,
  IdleTimeout,
  ConfigurableIdleTimeout,
  AbsoluteTimeout,
  ConfigurableAbsoluteTimeout,
  RenewalTimeout,
  ConfigurableRenewalTimeout,
  ConfigurableCookie,
  type CsrfOptions,
  type UserSessionInfo,
} from './features/index.js';
export {
  SessionError,
  ConfigurationError,
  FeatureNotEnabledError,
  SettingsError,
  SessionDataError,
  SessionNotLoadedError,
  SessionConflictError,
  SessionStoreUnavailableError,
} from './errors.js';
export {
  collectGarbage,
  countExpiredSessions,
  type ExpiredSessionsOptions,
  type GarbageCollectionOptions,
  type GarbageCollectionProgress,
  type GarbageCollectionResult,
} from './gc.js';
