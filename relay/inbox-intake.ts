// Taking one visitor's request into a webhook inbox: its body read with a hard cap, then kept and answered at once.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode } from '../protocol/errors.js';
import type { BodyKindValue, HeaderList } from '../protocol/frames.js';
import { declaredLength, INBOX_ID_HEADER } from '../protocol/headers.js';
import { headSize, type Inbox, type InboxRefusal } from './inbox.js';
import type { ErrorPage } from './pages.js';

/** The page for a request the inbox cannot keep. */
export function inboxRefusalPage(why: InboxRefusal, maxBodyBytes: number): ErrorPage {
  if (why === 'too_large')
    return {
      status: 413,
      code: ErrorCode.PayloadTooLarge,
      title: 'Payload Too Large',
      detail: `The tunnel's client is away and its inbox keeps request bodies of at most ${maxBodyBytes} bytes.`,
    };
  return {
    status: 503,
    code: ErrorCode.InboxFull,
    title: 'Tunnel offline',
    detail: "The tunnel's client is away and its inbox is full. Try again later.",
    retryAfterSeconds: 60,
  };
}

/** The request as it is to be kept: its head as a live request would have reached the tunnel. */
export interface IntakeHead {
  name: string;
  method: string;
  target: string;
  headers: HeaderList;
  body: BodyKindValue;
}

/** What an intake answers with. */
export interface IntakeAnswers {
  /** The status a kept request gets (--inbox-status). */
  status: number;
  maxBodyBytes: number;
  /** Answers with one of the relay's pages. */
  page(p: ErrorPage): void;
}

/** Head bytes a kept request counts: target, method and headers, plus the two delivery headers. */
function headBytes(h: IntakeHead): number {
  return headSize(h) + 64;
}

/**
 * Reads the visitor's body into the inbox and answers: the kept status with the request's id, 413 past the body cap,
 * 503 when the inbox is full. Nothing beyond the cap is ever buffered: the first byte over it stops the read.
 */
export function takeIn(
  inbox: Inbox,
  req: IncomingMessage,
  res: ServerResponse,
  head: IntakeHead,
  answers: IntakeAnswers,
): void {
  const declared = declaredLength(req.rawHeaders);
  const refuse = (why: InboxRefusal): void => {
    // What is left of the body is not read: the connection cannot carry another request after it.
    res.shouldKeepAlive = false;
    answers.page(inboxRefusalPage(why, answers.maxBodyBytes));
    req.resume();
  };
  const place = inbox.reserve(
    head.name,
    headBytes(head),
    Number.isNaN(declared) ? undefined : (declared ?? 0),
  );
  if (typeof place === 'string') return refuse(place);
  // Node answers 100 Continue itself only without a checkContinue listener; the relay has one.
  if (req.headers.expect?.toLowerCase() === '100-continue') res.writeContinue();
  const chunks: Buffer[] = [];
  let over = false;
  const onData = (chunk: Buffer): void => {
    if (over) return;
    const why = place.grow(chunk.length);
    if (why) {
      over = true;
      chunks.length = 0;
      place.cancel();
      req.off('data', onData);
      return refuse(why);
    }
    chunks.push(chunk);
  };
  req.on('data', onData);
  req.on('error', () => {}); // a visitor cutting its upload short: 'close' below frees its place
  req.once('end', () => {
    if (over) return;
    const stored = place.commit({
      method: head.method,
      target: head.target,
      headers: head.headers,
      body: head.body,
      data: Buffer.concat(chunks),
    });
    const text = `Kept for delivery: the tunnel's client is away; ggrok delivers this request when it is back (${stored.id}).\n`;
    res.writeHead(answers.status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(text),
      'Cache-Control': 'no-store',
      [INBOX_ID_HEADER]: stored.id,
    });
    res.end(text);
  });
  // The visitor left before its body was whole: nothing is kept.
  res.once('close', () => {
    if (!req.complete) place.cancel();
  });
}
