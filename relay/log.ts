// Relay log lines: one event per line as text, JSON or logfmt, with secrets redacted before formatting.

/** One structured event: what happened, plus flat fields. */
export interface RelayEvent {
  event: string;
  [key: string]: unknown;
}

/** The formats `--log-format` takes. */
export const LOG_FORMATS = ['text', 'json', 'logfmt'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Field names whose values are never printed, whatever an event carries. */
const SECRET_KEY = /token|secret|password|passwd|authorization|cookie|credential/i;
/** What a secret field's value is printed as. */
export const REDACTED = '[redacted]';

/** Largest string printed for one field; longer values (visitor-controlled paths, agents) are cut. */
const MAX_FIELD_CHARS = 2048;

/** Replaces the values of secret-looking fields (except those in `reveal`); every formatter goes through it. */
export function redact(event: RelayEvent, reveal: readonly string[] = []): RelayEvent {
  const out: RelayEvent = { event: event.event };
  for (const [key, value] of Object.entries(event)) {
    if (key === 'event' || value === undefined) continue;
    out[key] =
      SECRET_KEY.test(key) && !reveal.includes(key)
        ? REDACTED
        : typeof value === 'string' && value.length > MAX_FIELD_CHARS
          ? `${value.slice(0, MAX_FIELD_CHARS)}…`
          : value;
  }
  return out;
}

// Control characters, DEL, C1 controls and the Unicode line and paragraph separators: never raw in a line.
// eslint-disable-next-line no-control-regex
const UNSAFE_CHAR = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const UNSAFE_CHARS = new RegExp(UNSAFE_CHAR.source, 'g');

/** JSON.stringify, also escaping the characters some readers take for line breaks. */
function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(
    UNSAFE_CHARS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function toText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  return JSON.stringify(value) ?? '';
}

/** A logfmt value: bare when it is a simple word, otherwise a double-quoted string with JSON escapes. */
function logfmtValue(value: unknown): string {
  if (value === null) return '';
  const text = toText(value);
  if (text !== '' && !/[\s"=\\]/.test(text) && !UNSAFE_CHAR.test(text)) return text;
  return jsonLine(text);
}

/** A text value as the relay always printed it, quoted when it has spaces or control characters. */
function textValue(value: unknown): string {
  const text = value === null ? 'null' : toText(value);
  return /\s/.test(text) || UNSAFE_CHAR.test(text) ? jsonLine(text) : text;
}

/**
 * Formats one event as exactly one line (no trailing newline), secrets redacted. `reveal` names fields to
 * print anyway (only the generated token at start-up, which the operator must see once).
 */
export function formatEvent(
  e: RelayEvent,
  format: LogFormat,
  options: { at?: Date; reveal?: readonly string[] } = {},
): string {
  const time = (options.at ?? new Date()).toISOString();
  const event = redact(e, options.reveal);
  const fields = Object.entries(event).filter(([key]) => key !== 'event');
  switch (format) {
    case 'json':
      return jsonLine({ time, ...event });
    case 'logfmt':
      return [`time=${time}`, `event=${logfmtValue(event.event)}`]
        .concat(fields.map(([k, v]) => `${k}=${logfmtValue(v)}`))
        .join(' ');
    case 'text':
      return `${time} ${textValue(event.event)} ${fields.map(([k, v]) => `${k}=${textValue(v)}`).join(' ')}`;
  }
}
