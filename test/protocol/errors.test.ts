// The error catalogue: every code is declared once, wire codes are subsets of it, unknown wire codes stay readable.
import { describe, expect, it } from 'vitest';
import {
  ErrorCode,
  GgrokError,
  HTTP_STATUS,
  isErrorCode,
  RefuseCode,
  ResetCode,
  statusForReset,
} from '../../protocol/errors.js';

describe('the error catalogue', () => {
  it('declares each code once, and the Refuse and Reset codes are codes of the catalogue', () => {
    const values = Object.values(ErrorCode);
    expect(new Set(values).size).toBe(values.length);
    for (const code of [...Object.values(RefuseCode), ...Object.values(ResetCode)])
      expect(isErrorCode(code)).toBe(true);
  });

  it('maps resets to the status a visitor gets before the response head', () => {
    expect(
      [ResetCode.LocalUnreachable, ResetCode.RefusedStream, ResetCode.IdleTimeout].map(statusForReset),
    ).toEqual([502, 503, 504]);
    for (const code of Object.values(ResetCode)) expect(HTTP_STATUS[code]).toBeGreaterThanOrEqual(400);
  });

  it('keeps an unknown code from a newer peer readable instead of trusting it', () => {
    const known = GgrokError.fromWire('name_in_use', 'taken');
    expect([known.code, known.message]).toEqual(['name_in_use', 'taken']);
    const unknown = GgrokError.fromWire('quota_exceeded', 'too many bytes today');
    expect([unknown.code, unknown.message]).toEqual([
      'unknown_error',
      'quota_exceeded: too many bytes today',
    ]);
    expect(statusForReset(unknown.code)).toBe(502);
  });
});
