import { absoluteFeature, configurableAbsoluteFeature } from './absolute.js';
import { cookieFeature } from './cookie.js';
import { csrfFeature } from './csrf.js';
import type { Feature } from './feature.js';
import { configurableIdleFeature, idleFeature } from './idle.js';
import { configurableRenewalFeature, renewalFeature } from './renewal.js';
import { useridFeature } from './userid.js';

/**
 * The catalogue: every feature a session entity can embed.  Adding a feature
 * is one module in this folder and one line here.
 */
export const FEATURES: readonly Feature<any>[] = [
  useridFeature,
  csrfFeature,
  idleFeature,
  configurableIdleFeature,
  absoluteFeature,
  configurableAbsoluteFeature,
  renewalFeature,
  configurableRenewalFeature,
  cookieFeature,
];

/** The feature whose embeddable is `cls` or its nearest catalogued ancestor (a Userid subclass is Userid). */
export function featureOf(cls: unknown): Feature<any> | undefined {
  for (let c = cls; typeof c === 'function' && c !== Function.prototype; c = Object.getPrototypeOf(c)) {
    const found = FEATURES.find((feature) => feature.embeddable === c);
    if (found) return found;
  }
  return undefined;
}

export { Userid, type UserSessionInfo } from './userid.js';
export { Csrf, csrfProtection, type CsrfOptions } from './csrf.js';
export { IdleTimeout, ConfigurableIdleTimeout } from './idle.js';
export { AbsoluteTimeout, ConfigurableAbsoluteTimeout } from './absolute.js';
export { RenewalTimeout, ConfigurableRenewalTimeout } from './renewal.js';
export { ConfigurableCookie } from './cookie.js';
