// Secrets (tokens, Basic credentials) are kept and compared only as SHA-256 hashes, in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';

/** The hash a secret is kept and compared as. */
export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/**
 * Index of the hash in `hashes` that `presented` matches, or -1. Every hash is compared, whatever matched,
 * so the time taken says nothing about which secret (if any) was close.
 */
export function findSecret(presented: string, hashes: readonly Buffer[]): number {
  const p = hashSecret(presented);
  let found = -1;
  hashes.forEach((h, i) => {
    if (timingSafeEqual(p, h) && found < 0) found = i;
  });
  return found;
}
