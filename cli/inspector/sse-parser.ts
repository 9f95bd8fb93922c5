// Incremental parser for text/event-stream bodies (the WHATWG server-sent events format).
import { StringDecoder } from 'node:string_decoder';

/** One dispatched server-sent event. */
export interface ParsedSseEvent {
  /** The `event:` field; absent means "message". */
  event?: string;
  id?: string;
  retry?: number;
  /** The `data:` lines joined with "\n", cut at the parser's limit. */
  data: string;
  truncated: boolean;
}

/**
 * Splits pushed chunks into lines (CRLF, LF or CR, even across chunks) and dispatches an event at each blank
 * line, as browsers do. Each event's data is kept up to `maxEventChars`; longer lines are cut, never buffered whole.
 */
export class SseParser {
  private readonly decoder = new StringDecoder('utf8');
  private line = '';
  private lineCut = false;
  private skipLf = false;
  private first = true;
  private event: string | undefined;
  private id: string | undefined;
  private retry: number | undefined;
  private data: string[] = [];
  private dataChars = 0;
  private truncated = false;

  constructor(
    private readonly maxEventChars: number,
    private readonly onEvent: (e: ParsedSseEvent) => void,
  ) {}

  push(chunk: Buffer): void {
    let text = this.decoder.write(chunk);
    if (this.first && text.length > 0) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 && this.skipLf) {
        // The LF of a CRLF (possibly split across two chunks).
        this.skipLf = false;
        start = i + 1;
        continue;
      }
      this.skipLf = false;
      if (c !== 10 && c !== 13) continue;
      this.append(text.slice(start, i));
      this.endLine();
      this.skipLf = c === 13;
      start = i + 1;
    }
    if (start < text.length) this.append(text.slice(start));
  }

  private append(part: string): void {
    if (this.lineCut || part.length === 0) return;
    const room = this.maxEventChars + 16 - this.line.length;
    if (part.length > room) {
      this.line += part.slice(0, Math.max(0, room));
      this.lineCut = true;
      this.truncated = true;
    } else {
      this.line += part;
    }
  }

  private endLine(): void {
    const line = this.line;
    this.line = '';
    this.lineCut = false;
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return; // a comment (often a keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data': {
        const room = this.maxEventChars - this.dataChars;
        if (room <= 0 || value.length > room) this.truncated = true;
        const kept = room > 0 ? value.slice(0, room) : '';
        this.data.push(kept);
        this.dataChars += kept.length + 1;
        break;
      }
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored, as browsers do
    }
  }

  private dispatch(): void {
    if (this.data.length > 0 || this.event !== undefined) {
      const e: ParsedSseEvent = { data: this.data.join('\n'), truncated: this.truncated };
      if (this.event !== undefined && this.event !== '') e.event = this.event;
      if (this.id !== undefined) e.id = this.id;
      if (this.retry !== undefined) e.retry = this.retry;
      // Browsers drop events without data; the inspector shows them anyway (an event name alone is telling).
      this.onEvent(e);
    }
    this.event = undefined;
    this.retry = undefined;
    this.data = [];
    this.dataChars = 0;
    this.truncated = false;
    // The last event id persists across events, as in browsers; it is reported only where it was set.
    this.id = undefined;
  }
}
