import { defineEntity, p } from '@mikro-orm/core';
import { unwritable, validate, type Settings } from '../settings.js';
import { defineFeature, type Feature } from './feature.js';

/**
 * cookieMaxAge column: this session has no Max-Age although the global setting has one (0 is never a valid Max-Age).
 */
const BROWSER_SESSION = 0;

/**
 * Per-session cookie attributes: a "remember me" session can get a Max-Age
 * while others stay browser-session cookies.  A null column means "the global
 * setting", so a session cannot set an attribute back to null (no Domain) when
 * the global setting has one; Max-Age is the exception (koa-session's
 * `maxAge = 'session'` under a global Max-Age), stored as BROWSER_SESSION.
 * The cookie name stays global: it is how the session is found.
 */
export class ConfigurableCookie {
  cookieMaxAge: number | null = null;
  cookiePath: string | null = null;
  cookieDomain: string | null = null;
  cookieSecure: boolean | 'auto' | null = null;
  cookieHttpOnly: boolean | null = null;
  cookieSameSite: 'lax' | 'strict' | 'none' | false | null = null;
}

defineEntity({
  class: ConfigurableCookie,
  embeddable: true,
  properties: {
    cookieMaxAge: p.integer().nullable(),
    cookiePath: p.string().length(255).nullable(),
    cookieDomain: p.string().length(255).nullable(),
    // JSON keeps true, false and "auto" (and "lax"... or false) as they are.
    cookieSecure: p.json<boolean | 'auto'>().nullable(),
    cookieHttpOnly: p.boolean().nullable(),
    cookieSameSite: p.json<'lax' | 'strict' | 'none' | false>().nullable(),
  },
});

/**
 * A session with its own cookie Path or Domain carries them in its cookie's
 * encrypted payload: once its row is gone (revoked, expired, collected) they
 * are the only record of where the browser keeps the cookie, and a removal
 * under other attributes would leave it there, shadowing every new session's
 * cookie under that path.  JSON [path, domain]; at most MAX_ATTRIBUTE_BYTES.
 */
export const MAX_ATTRIBUTE_BYTES = 1100;

type CarriedAttributes = Pick<Settings, 'cookiePath' | 'cookieDomain'>;

function encodeAttributes(attributes: CarriedAttributes): Buffer {
  return Buffer.from(JSON.stringify([attributes.cookiePath, attributes.cookieDomain]));
}

/** The attributes a cookie carried; undefined if it carried none, or any a per-session setting could not hold. */
function decodeAttributes(bytes: Buffer): CarriedAttributes | undefined {
  if (bytes.length === 0) return undefined;
  try {
    const [cookiePath, cookieDomain] = JSON.parse(bytes.toString()) as unknown[];
    // The rules of a per-session value: whoever holds a key could still encrypt anything here.
    const checked = validate({ cookiePath, cookieDomain });
    if (typeof checked === 'string' || unwritable(checked)) return undefined;
    return { cookiePath: checked.cookiePath, cookieDomain: checked.cookieDomain };
  } catch {
    return undefined;
  }
}

export const cookieFeature: Feature<ConfigurableCookie> = defineFeature({
  name: 'ConfigurableCookie',
  property: 'cookie',
  embeddable: ConfigurableCookie,
  configurable: ['cookieMaxAge', 'cookiePath', 'cookieDomain', 'cookieSecure', 'cookieHttpOnly', 'cookieSameSite'],
  readSetting: (name, stored) => (name === 'cookieMaxAge' && stored === BROWSER_SESSION ? null : stored),
  storeSetting: (name, value, global) =>
    name === 'cookieMaxAge' && value === null && global !== null ? BROWSER_SESSION : value,
  carried: {
    maxBytes: MAX_ATTRIBUTE_BYTES,
    encode: (attributes, global) =>
      attributes.cookiePath !== global.cookiePath || attributes.cookieDomain !== global.cookieDomain
        ? encodeAttributes({ cookiePath: attributes.cookiePath!, cookieDomain: attributes.cookieDomain ?? null })
        : undefined,
    decode: decodeAttributes,
  },
});
