import { describe, expect, test } from 'vitest';
import { secureRandom } from '../src/random.js';

describe('the pooled secure random source', () => {
  test('hands out each byte once: 10,000 tokens across many refills are distinct and keep their value', () => {
    const drawn = Array.from({ length: 10_000 }, () => secureRandom(16));
    const copies = drawn.map((bytes) => Buffer.from(bytes));
    // Draw on, through several more refills of the pool: what was handed out must not change.
    for (let i = 0; i < 1000; i++) secureRandom(31);
    expect(drawn.every((bytes, i) => bytes.length === 16 && bytes.equals(copies[i]))).toBe(true);
    expect(new Set(copies.map((bytes) => bytes.toString('hex'))).size).toBe(10_000);
  });

  test('every size is served in full, small ones from the pool and large ones directly', () => {
    for (const size of [1, 12, 16, 32, 1024, 1025, 4096, 10_000]) expect(secureRandom(size)).toHaveLength(size);
    const draws = Array.from({ length: 16 }, () => secureRandom(1000));
    // 16,000 bytes of a CSPRNG hold every byte value (a zero-filled or repeating pool would not).
    expect(new Set(draws.flatMap((bytes) => [...bytes])).size).toBe(256);
  });
});
