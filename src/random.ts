import { randomBytes } from 'node:crypto';

/**
 * Cryptographically secure random bytes, drawn from a pool filled 4 KiB at a
 * time.  Each randomBytes() call is a job of its own in Node (a CSPRNG draw,
 * a buffer, a round through the crypto binding): a CPU profile of requests
 * that open a session put two small calls (the token and the cookie's IV) at
 * ~6 % of the server's time.  Node's crypto.randomUUID() pools for the same
 * reason.  The bytes are the same CSPRNG's, each handed out once; a refill
 * takes a fresh buffer, so bytes already handed out never change.
 */
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

/** `size` secure random bytes; the Buffer may be a view of the pool, and is the caller's to keep. */
export function secureRandom(size: number): Buffer {
  if (size > POOL_SIZE / 4) return randomBytes(size); // large draws gain nothing from the pool
  if (offset + size > pool.length) {
    pool = randomBytes(POOL_SIZE);
    offset = 0;
  }
  const bytes = pool.subarray(offset, offset + size);
  offset += size;
  return bytes;
}
