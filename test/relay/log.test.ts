// Relay log lines: exactly one line per event in every format, parseable, with secrets redacted.
import { describe, expect, it } from 'vitest';
import { formatEvent, LOG_FORMATS, REDACTED, redact } from '../../relay/log.js';

const AT = new Date('2024-05-06T07:08:09.010Z');

describe('formatEvent', () => {
  const hostile = {
    event: 'connect',
    name: 'demo',
    agent: 'line one\nline two\r\u2028"quoted" = \\ \u001b[31mred',
    count: 3,
    fatal: false,
    nothing: null,
    skipped: undefined,
    nested: { a: 1 },
  };

  it('json: one line that parses back to the same fields, with a time', () => {
    const line = formatEvent(hostile, 'json', { at: AT });
    expect(line).not.toMatch(/[\n\r\u2028\u2029]/);
    expect(line).not.toContain('\u001b');
    expect(JSON.parse(line)).toEqual({
      time: AT.toISOString(),
      event: 'connect',
      name: 'demo',
      agent: hostile.agent,
      count: 3,
      fatal: false,
      nothing: null,
      nested: { a: 1 },
    });
  });

  it('logfmt: key=value pairs, quoting only what needs it', () => {
    const line = formatEvent(hostile, 'logfmt', { at: AT });
    expect(line).not.toMatch(/[\n\r\u2028\u2029]/);
    expect(line).not.toContain('\u001b');
    expect(
      line.startsWith(`time=${AT.toISOString()} event=connect name=demo agent="line one\\nline two`),
    ).toBe(true);
    expect(line).toContain(' count=3 fatal=false nothing= nested="{\\"a\\":1}"');
    expect(line).not.toContain('skipped');
    const agent = /agent=("(?:[^"\\]|\\.)*")/.exec(line)![1]!;
    expect(JSON.parse(agent)).toBe(hostile.agent);
  });

  it('text: as before, time, event, then fields; strings with spaces quoted', () => {
    expect(
      formatEvent({ event: 'disconnect', name: 'demo', reason: 'client closed', code: 1000 }, 'text', {
        at: AT,
      }),
    ).toBe(`${AT.toISOString()} disconnect name=demo reason="client closed" code=1000`);
    expect(formatEvent(hostile, 'text', { at: AT })).not.toMatch(/[\n\r\u2028]/);
    expect(formatEvent(hostile, 'text', { at: AT })).not.toContain('\u001b');
  });

  it('never prints secret-looking fields, in any format, unless told to', () => {
    const event = {
      event: 'oops',
      token: 'tok-123',
      metricsToken: 'mt-456',
      authorization: 'Basic abc',
      password: 'pw-789',
      webhookSecret: 'ws-000',
    };
    for (const format of LOG_FORMATS) {
      const line = formatEvent(event, format);
      for (const secret of ['tok-123', 'mt-456', 'Basic abc', 'pw-789', 'ws-000'])
        expect(line).not.toContain(secret);
      expect(line).toContain(REDACTED);
      expect(formatEvent(event, format, { reveal: ['token'] })).toContain('tok-123');
    }
    expect(redact(event).token).toBe(REDACTED);
  });

  it('cuts very long values', () => {
    const line = formatEvent({ event: 'request', path: `/${'a'.repeat(10_000)}` }, 'json');
    expect(line.length).toBeLessThan(3000);
  });
});
