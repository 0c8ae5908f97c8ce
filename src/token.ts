import { hash } from 'node:crypto';
import { secureRandom } from './random.js';

/**
 * The secret a cookie carries is a random 128-bit token; the row's primary key
 * is its SHA-256.  A database dump (ids only) cannot be turned into a cookie,
 * and a leaked cookie key cannot forge one for an existing row without a token.
 */
export const TOKEN_BYTES = 16;

export function newToken(): Buffer {
  return secureRandom(TOKEN_BYTES);
}

/**
 * 64 lowercase hex characters: the non-secret `ctx.session.id`.  Hex rather
 * than base64url because MySQL-family collations compare strings without case.
 */
export const SESSION_ID_LENGTH = 64;

export function sessionIdOf(token: Buffer): string {
  // The one-shot hash(): no Hash object per request.
  return hash('sha256', token, 'hex');
}

/**
 * Ids of the tokens in cookies the codec decrypted: it hands a returning
 * browser's payload back as the same Buffer (codec.ts), so the SHA-256 is
 * computed once per cookie value rather than on every request.  Weak: an id
 * goes when the codec drops the payload.
 */
const presentedIds = new WeakMap<Buffer, string>();

/** sessionIdOf() the token at the start of `payload`, a decrypted cookie's payload. */
export function sessionIdOfPayload(payload: Buffer): string {
  let id = presentedIds.get(payload);
  if (id === undefined) presentedIds.set(payload, (id = sessionIdOf(payload.subarray(0, TOKEN_BYTES))));
  return id;
}
