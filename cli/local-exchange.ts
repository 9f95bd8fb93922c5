// One whole HTTP request to the local service on a pooled connection, for callers other than a tunnel stream (the
// inspector's replay): the same request-head bytes, keep-alive pool, response parser and retry rule as live traffic.
import type { HeaderList } from '../protocol/frames.js';
import { headerLines } from '../protocol/headers.js';
import type { ConnectionUser, LocalConnection, LocalPool } from './local-pool.js';

/** The request head as bytes for the local service (latin1: header values carry the public request's raw bytes). */
export function requestHead(method: string, target: string, headers: HeaderList): string {
  return `${method} ${target} HTTP/1.1\r\n${headerLines(headers)}\r\n`;
}

/** A request to send whole. */
export interface LocalRequest {
  method: string;
  target: string;
  /** Every header field as it goes on the wire, framing (Content-Length or Transfer-Encoding) included. */
  headers: HeaderList;
  /** The bytes after the head, already in the framing the headers announce (empty for none). */
  body: Buffer;
}

/** What the response does, in wire order; exactly one of onDone and onError ends it. */
export interface LocalResponseHandler {
  /** A response head; `info` for 1xx heads (the final head follows). */
  onHead(status: number, reason: string, headers: HeaderList, info: boolean): void;
  /** A piece of the body (framing removed), a view of the socket's read. */
  onBody(chunk: Buffer): void;
  onDone(trailers: HeaderList): void;
  /** The request failed: before a final head (`responded` false) or in the middle of the body. */
  onError(err: Error, responded: boolean): void;
}

/** A request in flight; cancel() drops its connection (it is mid-exchange) and reports nothing more. */
export interface LocalExchange {
  cancel(): void;
}

/** Message of the error for a response cut short by the local service. */
export const MID_RESPONSE_MESSAGE = 'the local service closed the connection mid-response';

/**
 * Sends `request` on a connection from `pool` and reports the response to `handler`. Like live traffic: a request
 * with a body only takes a connection fresh enough for one, and a bodiless request is sent again once on a new
 * connection when a reused keep-alive socket closes before a byte of the answer.
 */
export function sendLocalRequest(
  pool: LocalPool,
  request: LocalRequest,
  handler: LocalResponseHandler,
): LocalExchange {
  const exchange = new WholeRequest(pool, request, handler);
  exchange.send(pool.take(request.body.length > 0) ?? pool.open(false));
  return exchange;
}

class WholeRequest implements ConnectionUser, LocalExchange {
  private conn: LocalConnection | undefined;
  private responded = false;
  private over = false;
  private retried = false;

  constructor(
    private readonly pool: LocalPool,
    private readonly request: LocalRequest,
    private readonly handler: LocalResponseHandler,
  ) {}

  send(conn: LocalConnection): void {
    const { method, target, headers, body } = this.request;
    this.conn = conn;
    conn.begin(this, method, false);
    conn.socket.write(requestHead(method, target, headers), 'latin1');
    if (body.length > 0) conn.socket.write(body);
  }

  cancel(): void {
    this.over = true;
    const conn = this.conn;
    this.conn = undefined;
    conn?.discard();
  }

  onHead(status: number, reason: string, headers: HeaderList, info: boolean): void {
    if (this.over) return;
    if (!info) this.responded = true;
    this.handler.onHead(status, reason, headers, info);
  }

  onBody(chunk: Buffer): void {
    if (!this.over) this.handler.onBody(chunk);
  }

  onDone(trailers: HeaderList): void {
    if (this.over) return;
    this.over = true;
    // The whole request went out with its head, so the connection is free once the response is read.
    const conn = this.conn;
    this.conn = undefined;
    conn?.release();
    this.handler.onDone(trailers);
  }

  onUpgrade(): void {} // never asked for

  onConnectionLost(err: Error): void {
    const reused = this.conn?.reused ?? false;
    const started = this.conn?.parser.started ?? false;
    this.conn = undefined;
    if (this.over) return;
    if (this.responded) {
      this.over = true;
      return this.handler.onError(new Error(MID_RESPONSE_MESSAGE), true);
    }
    if (reused && !started && !this.retried && this.request.body.length === 0) {
      this.retried = true;
      return this.send(this.pool.open(false));
    }
    this.over = true;
    this.handler.onError(err, false);
  }

  onWritable(): void {} // the request is written whole at once
}
