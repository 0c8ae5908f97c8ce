// Importing a feature module registers it; this is the one place that imports them all.
export { Userid, listUserSessions, revokeUserSessions, type UserSessionInfo } from './userid.js';
export { Csrf, csrfProtection, type CsrfOptions } from './csrf.js';
export { IdleTimeout, ConfigurableIdleTimeout } from './idle.js';
export { AbsoluteTimeout, ConfigurableAbsoluteTimeout } from './absolute.js';
export { RenewalTimeout, ConfigurableRenewalTimeout, RENEWAL_ID_BYTES, renewalFeature } from './renewal.js';
export { ConfigurableCookie } from './cookie.js';
