// Token parsing and matching, property by property: labels, padding, owners, and that every entry is compared.
import { createHash } from 'node:crypto';
import * as crypto from 'node:crypto';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { matchToken, parseTokens, tokenId, tokenMatches } from '../../relay/tokens.js';

// timingSafeEqual is wrapped (not replaced) so the tests can count how many comparisons a lookup makes.
vi.mock('node:crypto', async (importOriginal) => {
  const original = await importOriginal<typeof import('node:crypto')>();
  return { ...original, timingSafeEqual: vi.fn(original.timingSafeEqual) };
});
const compared = vi.mocked(crypto.timingSafeEqual);
afterEach(() => compared.mockClear());

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('tokenId', () => {
  test('is the hex SHA-256 of the whole token', () => {
    expect(tokenId('s3cret')).toBe(sha256('s3cret'));
    expect(tokenId('')).toBe(sha256(''));
    expect(tokenId('s3cret')).toMatch(/^[0-9a-f]{64}$/);
    expect(tokenId('s3cret')).not.toBe(tokenId('s3cret '));
  });
});

describe('parseTokens', () => {
  test('a plain token is labelled token# and the first 6 hex digits of its hash, and accepted only as itself', () => {
    expect(parseTokens(['s3cret'])).toEqual([
      { label: `token#${sha256('s3cret').slice(0, 6)}`, owner: sha256('s3cret'), accepted: ['s3cret'] },
    ]);
  });

  test('label=secret gives the secret a label; the secret and the whole entry are accepted', () => {
    expect(parseTokens(['alice=s3cret'])).toEqual([
      { label: 'alice', owner: sha256('s3cret'), accepted: ['s3cret', 'alice=s3cret'] },
    ]);
    // Label characters: letters and digits first, then word characters and . @ + -; up to 64 in all.
    expect(parseTokens(['ci.bot@example+1-x_y=k'])[0]!.label).toBe('ci.bot@example+1-x_y');
    expect(parseTokens([`${'a'.repeat(64)}=k`])[0]!.label).toBe('a'.repeat(64));
  });

  test('the owner is the hash of the secret: labelling a token later keeps its tunnels and names', () => {
    expect(parseTokens(['bob=s3cret'])[0]!.owner).toBe(parseTokens(['s3cret'])[0]!.owner);
    expect(parseTokens(['bob=s3cret'])[0]!.owner).toBe(tokenId('s3cret'));
  });

  test('a token that merely ends in = (base64 padding) stays a plain token', () => {
    for (const raw of ['dG9rZW4=', 'YWJjZA==', 'x=', 'x==', 'abc===']) {
      const [entry] = parseTokens([raw]);
      expect(entry, raw).toEqual({
        label: `token#${sha256(raw).slice(0, 6)}`,
        owner: sha256(raw),
        accepted: [raw],
      });
    }
    // Something other than padding after the first '=' makes it labelled, padding included in the secret.
    expect(parseTokens(['abc=def='])[0]).toEqual({
      label: 'abc',
      owner: sha256('def='),
      accepted: ['def=', 'abc=def='],
    });
  });

  test('what is not a valid label leaves the whole entry a plain token', () => {
    for (const raw of [
      '=secret', // empty label
      '-bob=secret', // must start with a letter or digit
      '.bob=secret',
      'bo b=secret', // space
      'bob/x=secret', // '/' is not a label character (base64 alphabet)
      'bob:x=secret',
      `${'a'.repeat(65)}=secret`, // too long
      'émile=secret', // not ASCII
    ]) {
      const [entry] = parseTokens([raw]);
      expect(entry!.label, raw).toBe(`token#${sha256(raw).slice(0, 6)}`);
      expect(entry!.accepted, raw).toEqual([raw]);
      expect(entry!.owner, raw).toBe(sha256(raw));
    }
  });

  test('keeps order and count, odd entries included: empty list, empty token, the same secret twice', () => {
    expect(parseTokens([])).toEqual([]);
    const entries = parseTokens(['', 'a=x', 'b=x', 'x']);
    expect(entries.map((e) => e.label)).toEqual([
      `token#${sha256('').slice(0, 6)}`,
      'a',
      'b',
      expect.any(String),
    ]);
    expect(entries[0]!.accepted).toEqual(['']);
    // Three entries, one owner: a secret is its owner whatever label it carries.
    expect(new Set(entries.slice(1).map((e) => e.owner))).toEqual(new Set([sha256('x')]));
  });
});

describe('matchToken', () => {
  const entries = parseTokens([
    'alice=a-secret',
    'plain-token',
    'YWJjZA==',
    'bob=b-secret',
    'carol=a-secret',
  ]);

  test('finds the entry by its secret, by the whole labelled entry, and a padded plain token as is', () => {
    expect(matchToken('a-secret', entries)?.label).toBe('alice');
    expect(matchToken('alice=a-secret', entries)?.label).toBe('alice');
    expect(matchToken('b-secret', entries)?.label).toBe('bob');
    expect(matchToken('bob=b-secret', entries)?.label).toBe('bob');
    expect(matchToken('plain-token', entries)).toBe(entries[1]);
    expect(matchToken('YWJjZA==', entries)).toBe(entries[2]);
    // The same secret under two labels: the first configured entry wins, whichever way it is presented…
    expect(matchToken('a-secret', entries)).toBe(entries[0]);
    // …except the whole entry, which names its own label.
    expect(matchToken('carol=a-secret', entries)).toBe(entries[4]);
  });

  test('nothing else matches: a label, a wrong label, near misses, case, whitespace, the empty string', () => {
    for (const presented of [
      'alice',
      'alice=',
      'bob=a-secret', // a real secret under another entry's label
      'a-secret ',
      ' a-secret',
      'A-SECRET',
      'a-secre',
      'a-secrett',
      'YWJjZA=',
      'YWJjZA',
      '',
    ])
      expect(matchToken(presented, entries), JSON.stringify(presented)).toBeUndefined();
    expect(matchToken('anything', [])).toBeUndefined();
  });

  test('an empty configured token matches only the empty string', () => {
    const withEmpty = parseTokens(['']);
    expect(matchToken('', withEmpty)).toBe(withEmpty[0]);
    expect(matchToken('x', withEmpty)).toBeUndefined();
  });

  test('compares every accepted string of every entry, in constant time, wherever the match is', () => {
    // alice (2 accepted strings), plain-token (1), YWJjZA== (1), bob (2), carol (2): 8 comparisons every time.
    for (const presented of ['a-secret', 'carol=a-secret', 'plain-token', 'no-such-token']) {
      compared.mockClear();
      matchToken(presented, entries);
      expect(compared, presented).toHaveBeenCalledTimes(8);
      // Hash against hash: equal lengths, so timingSafeEqual never throws and the length never leaks.
      for (const [a, b] of compared.mock.calls) {
        expect((a as Buffer).length).toBe(32);
        expect((b as Buffer).length).toBe(32);
      }
    }
  });
});

describe('tokenMatches', () => {
  test('compares whole strings (no label syntax) against every allowed token', () => {
    const allowed = ['metrics-token', 'ops=m2', 'YWJjZA=='];
    expect(tokenMatches('metrics-token', allowed)).toBe(true);
    expect(tokenMatches('ops=m2', allowed)).toBe(true);
    expect(tokenMatches('YWJjZA==', allowed)).toBe(true);
    expect(tokenMatches('m2', allowed)).toBe(false); // labels mean nothing here
    expect(tokenMatches('metrics-token ', allowed)).toBe(false);
    expect(tokenMatches('', allowed)).toBe(false);
    expect(tokenMatches('metrics-token', [])).toBe(false);
    for (const presented of ['metrics-token', 'YWJjZA==', 'nope']) {
      compared.mockClear();
      tokenMatches(presented, allowed);
      expect(compared, presented).toHaveBeenCalledTimes(3);
    }
  });
});
