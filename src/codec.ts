import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createSecretKey,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { ConfigurationError } from './errors.js';
import { secureRandom } from './random.js';

/**
 * The cookie envelope: an AES-GCM encryption of a few random bytes (the session
 * token, later also the renewal id), never of session data.
 *
 *   base64url( version:1 | keyId:4 | iv:12 | ciphertext | tag:16 )
 *
 * The version, the key id and the cookie name are authenticated as additional
 * data, so a value cannot be moved to another cookie name or re-labelled with
 * another key.  GCM already authenticates: the value is never signed again.
 */
const VERSION = 1;
const HEADER = 1 + 4;
const IV = 12;
const TAG = 16;
const KEY_SIZES = new Set([16, 24, 32]);
/**
 * Cookies decrypted lately, by value: a returning browser sends the same value
 * on every request, and an AES-GCM decryption (a cipher context per call) was
 * ~10 % of the server's CPU on a read.  Only values that authenticated are
 * kept, so a flood of forged cookies cannot fill it; the oldest go first.
 * It holds what a request holds anyway (the token), and skips no check that
 * matters: the row is still looked up, so a revoked session stays revoked.
 */
const RECENT = 4096;

interface Key {
  readonly id: Buffer;
  /** The envelope's first bytes under this key: the version and the key id. */
  readonly header: Buffer;
  /** The additional data: the cookie name's label, then the header, given to the cipher in one call. */
  readonly aad: Buffer;
  /** Imported once at start-up, not on every request. */
  readonly secret: KeyObject;
  readonly algorithm: 'aes-128-gcm' | 'aes-192-gcm' | 'aes-256-gcm';
}

export type DecodeResult =
  | { ok: true; payload: Buffer; /** true when an older key of the ring decrypted it: re-issue */ stale: boolean }
  /** malformed: not our format; unknown-key: made under a key not in the ring; forged: failed authentication. */
  | { ok: false; reason: 'malformed' | 'unknown-key' | 'forged' };

/** A printable random key for the `secret` option: 32 bytes, base64url. */
export function generateSecretKey(): string {
  return randomBytes(32).toString('base64url');
}

type Decoded = Extract<DecodeResult, { ok: true }>;

export class CookieCodec {
  readonly #keys: Key[];
  readonly #recent = new Map<string, Decoded>();

  /** `secrets`: the first key encrypts, every key decrypts (rotation). */
  constructor(secrets: string | readonly string[], cookieName: string) {
    const list = typeof secrets === 'string' ? [secrets] : Array.isArray(secrets) ? [...secrets] : undefined;
    if (!list)
      throw new ConfigurationError(
        'secret: expected a base64url key, or a list of keys, as printed by generateSecretKey()',
      );
    if (list.length === 0)
      throw new ConfigurationError('secret: give at least one key (generate one with generateSecretKey())');
    const label = Buffer.from(`koa-mikro-session:${cookieName}`);
    this.#keys = list.map((secret, index) => parseKey(secret, index, label));
    const ids = new Set(this.#keys.map((key) => key.id.toString('hex')));
    if (ids.size !== this.#keys.length) throw new ConfigurationError('secret: the same key is listed twice');
  }

  encode(payload: Buffer): string {
    const key = this.#keys[0];
    const iv = secureRandom(IV);
    const cipher = createCipheriv(key.algorithm, key.secret, iv);
    cipher.setAAD(key.aad);
    const body = Buffer.concat([key.header, iv, cipher.update(payload), cipher.final(), cipher.getAuthTag()]);
    return body.toString('base64url');
  }

  /**
   * Never throws: every failure is a reason the middleware reports as an event.
   * The payload is `payloadLength` bytes, plus up to `extraLength` more where
   * the caller allows a variable part.  The payload is never to be mutated.
   */
  decode(value: string, payloadLength: number, extraLength = 0): DecodeResult {
    const shortest = HEADER + IV + payloadLength + TAG;
    // Checked before decoding so an oversized header costs nothing.
    if (value.length < Math.ceil((shortest * 4) / 3) || value.length > Math.ceil(((shortest + extraLength) * 4) / 3))
      return { ok: false, reason: 'malformed' };
    const recent = this.#recent.get(value);
    if (recent) return recent;
    const decoded = this.#decrypt(value, shortest, shortest + extraLength);
    if (decoded.ok) {
      if (this.#recent.size >= RECENT) this.#recent.delete(this.#recent.keys().next().value!);
      this.#recent.set(value, decoded);
    }
    return decoded;
  }

  /** How many decrypted values are kept (at most 4096): for the tests. */
  get recentCount(): number {
    return this.#recent.size;
  }

  #decrypt(value: string, shortest: number, longest: number): DecodeResult {
    if (!BASE64URL.test(value)) return { ok: false, reason: 'malformed' };
    const raw = Buffer.from(value, 'base64url');
    const expected = raw.length;
    // Re-encoding rejects the variants of a value that differ only in the unused bits of its last character.
    if (expected < shortest || expected > longest || raw[0] !== VERSION || raw.toString('base64url') !== value)
      return { ok: false, reason: 'malformed' };
    const index = this.#keys.findIndex((key) => raw.compare(key.id, 0, 4, 1, HEADER) === 0);
    if (index < 0) return { ok: false, reason: 'unknown-key' };
    const key = this.#keys[index];
    try {
      const decipher = createDecipheriv(key.algorithm, key.secret, raw.subarray(HEADER, HEADER + IV), {
        authTagLength: TAG,
      });
      // The value's header is the key's: its version and key id were matched above.
      decipher.setAAD(key.aad);
      decipher.setAuthTag(raw.subarray(expected - TAG));
      const payload = Buffer.concat([decipher.update(raw.subarray(HEADER + IV, expected - TAG)), decipher.final()]);
      return { ok: true, payload, stale: index > 0 };
    } catch {
      return { ok: false, reason: 'forged' };
    }
  }
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

function parseKey(secret: unknown, index: number, label: Buffer): Key {
  const where = index === 0 ? 'secret' : `secret[${index}]`;
  if (typeof secret !== 'string' || !BASE64URL.test(secret)) {
    throw new ConfigurationError(`${where}: expected a base64url key as printed by generateSecretKey()`);
  }
  const bytes = Buffer.from(secret, 'base64url');
  if (!KEY_SIZES.has(bytes.length) || bytes.toString('base64url') !== secret) {
    throw new ConfigurationError(
      `${where}: a key must be 16, 24 or 32 bytes in base64url (got ${bytes.length} bytes); generate one with ` +
        `generateSecretKey()`,
    );
  }
  // A public fingerprint of the key: lets decode pick the right key without trying each.
  const id = createHash('sha256').update('koa-mikro-session key id\0').update(bytes).digest().subarray(0, 4);
  const algorithm = `aes-${bytes.length * 8}-gcm` as Key['algorithm'];
  const header = Buffer.concat([Buffer.of(VERSION), id]);
  // GCM takes additional data in pieces or whole alike: this is what two setAAD() calls (label, header) gave.
  return { id, header, aad: Buffer.concat([label, header]), secret: createSecretKey(bytes), algorithm };
}
