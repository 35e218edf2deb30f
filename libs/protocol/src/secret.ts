import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Compares a token someone gave with the expected one in constant time. Both are hashed first, so
 * the comparison is of equal-length digests whatever the strings' lengths in characters or bytes:
 * a guess of the right length in non-ASCII characters cannot throw (timingSafeEqual does on unequal
 * byte lengths), and the time says nothing about the length.
 */
export function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}
