// Client and observer tokens: `label=secret` parsing, owners, and matching.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Credentials, generateToken, matchToken, parseTokens, tokenMatches } from '../../relay/tokens.js';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('parseTokens', () => {
  it('reads label=secret, and labels a plain token by its hash', () => {
    const [alice, plain] = parseTokens(['alice=s3cret', 'abc']);
    expect(alice).toEqual({ label: 'alice', owner: sha('s3cret'), accepted: ['s3cret', 'alice=s3cret'] });
    expect(plain).toEqual({ label: `token#${sha('abc').slice(0, 6)}`, owner: sha('abc'), accepted: ['abc'] });
  });

  it('keeps base64 padding and odd labels as plain tokens', () => {
    for (const raw of ['YWJj=', 'YWJjZA==', '=leading', 'bad label=x', '-dash=x'])
      expect(parseTokens([raw])[0]!.accepted, raw).toEqual([raw]);
  });
});

describe('matching', () => {
  it('finds the entry a presented token belongs to, by secret or whole entry', () => {
    const entries = parseTokens(['alice=s3cret', 'bob-token']);
    expect(matchToken('s3cret', entries)?.label).toBe('alice');
    expect(matchToken('alice=s3cret', entries)?.label).toBe('alice');
    expect(matchToken('bob-token', entries)?.owner).toBe(sha('bob-token'));
    expect(matchToken('s3cre', entries)).toBeUndefined();
    expect(matchToken('', entries)).toBeUndefined();
    expect(tokenMatches('x', ['y', 'x'])).toBe(true);
    expect(tokenMatches('x', [])).toBe(false);
  });

  it('observers use the metrics token when one is set, any client token otherwise', () => {
    const open = new Credentials(['alice=s3cret'], undefined);
    expect([open.observer('s3cret'), open.observer('alice=s3cret'), open.observer('nope')]).toEqual([
      true,
      true,
      false,
    ]);
    const closed = new Credentials(['alice=s3cret'], 'scraper');
    expect([closed.observer('s3cret'), closed.observer('scraper')]).toEqual([false, true]);
    expect(closed.client('s3cret')?.label).toBe('alice');
  });

  it('generates distinct URL-safe tokens', () => {
    const a = generateToken();
    expect(a).toMatch(/^[\w-]{24}$/);
    expect(generateToken()).not.toBe(a);
  });
});
