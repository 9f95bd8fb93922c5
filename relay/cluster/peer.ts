// Handing a visitor's request to the instance that holds its tunnel: a fly-replay answer on Fly, or an
// authenticated HTTP forward over the operators' private network (--peer-url). Never more than one hop.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { declaredLength, headerLines, stripHopByHop } from '../../protocol/headers.js';

/** The header a forwarding instance signs: `v1 <from> <visitor> <proto> <timestampMs> <signature>`. */
export const PEER_HEADER = 'x-ggrok-peer';
/** A signature older (or newer) than this is refused: a captured header cannot be replayed later. */
const PEER_SIGNATURE_MAX_AGE_MS = 60_000;
/** Fly's proxy replays request bodies of at most 1 MB. */
const FLY_REPLAY_MAX_BODY_BYTES = 1_000_000;
/** How long Fly's proxy may take to reach the machine named in fly-replay before trying this one again. */
const FLY_REPLAY_TIMEOUT = '5s';

/** Who a forwarded request really came from, as the forwarding instance vouches. */
export interface PeerVia {
  /** The instance that forwarded it. */
  from: string;
  /** The visitor's address (for X-Forwarded-For and --allow-ip). */
  visitor: string;
  /** The scheme the visitor used. */
  proto: 'http' | 'https';
}

/** The key instances sign forwarded requests with: derived from the tokens (their hashes), which every instance shares. */
export function peerSecret(tokenHashes: readonly string[]): Buffer {
  return createHash('sha256')
    .update(`ggrok-peer-v1\n${[...tokenHashes].sort().join('\n')}`)
    .digest();
}

/** Signs and checks the peer header. */
export class PeerAuth {
  constructor(
    private readonly secret: Buffer,
    private readonly instanceId: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The header value for forwarding `req` on behalf of `visitor`. */
  sign(req: IncomingMessage, visitor: string, proto: 'http' | 'https'): string {
    const at = this.now();
    return `v1 ${this.instanceId} ${visitor} ${proto} ${at} ${this.mac(req, this.instanceId, visitor, proto, at)}`;
  }

  /** The forwarding instance's word, `invalid` for a forged or stale header, or undefined when there is none. */
  verify(req: IncomingMessage): PeerVia | 'invalid' | undefined {
    const value = req.headers[PEER_HEADER];
    if (value === undefined) return undefined;
    if (typeof value !== 'string') return 'invalid';
    const m = /^v1 (\S{1,128}) (\S{1,64}) (https?) (\d{1,15}) ([0-9a-f]{64})$/.exec(value);
    if (!m) return 'invalid';
    const [, from, visitor, proto, atText, signature] = m as unknown as [
      string,
      string,
      string,
      'http' | 'https',
      string,
      string,
    ];
    const at = Number(atText);
    if (Math.abs(this.now() - at) > PEER_SIGNATURE_MAX_AGE_MS) return 'invalid';
    const expected = Buffer.from(this.mac(req, from, visitor, proto, at), 'hex');
    if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) return 'invalid';
    return { from, visitor, proto };
  }

  private mac(req: IncomingMessage, from: string, visitor: string, proto: string, at: number): string {
    return createHmac('sha256', this.secret)
      .update([from, visitor, proto, at, req.method, req.url, req.headers.host ?? ''].join('\n'))
      .digest('hex');
  }
}

/** Whether Fly's proxy can replay this request elsewhere: not replayed already, and a body of at most 1 MB. */
export function flyCanReplay(req: IncomingMessage): boolean {
  // Replayed here already, or sent back here because the replay failed: one hop only.
  if (req.headers['fly-replay-src'] !== undefined || req.headers['fly-replay-failed'] !== undefined)
    return false;
  if (req.headers['transfer-encoding'] !== undefined) return false;
  const length = declaredLength(req.rawHeaders) ?? 0;
  return !Number.isNaN(length) && length <= FLY_REPLAY_MAX_BODY_BYTES;
}

/** The fly-replay header value naming a machine, with a timeout and this machine as the fallback. */
export function flyReplayValue(machine: string): string {
  return `instance=${machine};timeout=${FLY_REPLAY_TIMEOUT};fallback=prefer_self`;
}

/** Answers a plain request with fly-replay: Fly's proxy re-delivers it to `machine`. */
export function replayRequestOnFly(res: ServerResponse, machine: string): void {
  res.writeHead(307, {
    'fly-replay': flyReplayValue(machine),
    'Content-Length': 0,
    'Cache-Control': 'no-store',
  });
  res.end();
}

/** Answers an upgrade with fly-replay (never accepting it here): Fly's proxy re-delivers it to `machine`. */
export function replayUpgradeOnFly(socket: Duplex, machine: string): void {
  socket.end(
    `HTTP/1.1 307 Temporary Redirect\r\nfly-replay: ${flyReplayValue(machine)}\r\nContent-Length: 0\r\n` +
      'Cache-Control: no-store\r\nConnection: close\r\n\r\n',
  );
}

/** Keep-alive connections to each peer, reused across forwarded requests. */
const agents = new Map<string, http.Agent>();

function agentFor(origin: string): http.Agent {
  let agent = agents.get(origin);
  if (!agent) {
    agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
    agents.set(origin, agent);
  }
  return agent;
}

/** The visitor's request, re-sent to the peer at `peerUrl` (an upgrade on a connection of its own). */
function peerRequest(
  req: IncomingMessage,
  peerUrl: string,
  signature: string,
  upgrade: boolean,
): http.ClientRequest {
  const url = new URL(peerUrl);
  return http.request({
    host: url.hostname,
    port: url.port || 80,
    method: req.method,
    path: req.url,
    headers: peerHeaders(req, signature, upgrade),
    agent: upgrade ? false : agentFor(url.origin),
  });
}

/** The request's headers as a peer receives them: hop-by-hop stripped, framing restated, the signature added. */
function peerHeaders(req: IncomingMessage, signature: string, upgrade: boolean): string[] {
  const headers = stripHopByHop(req.rawHeaders, upgrade);
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2)
    if (headers[i]!.toLowerCase() !== PEER_HEADER) out.push(headers[i]!, headers[i + 1]!);
  if (!upgrade && req.headers['transfer-encoding'] !== undefined) out.push('Transfer-Encoding', 'chunked');
  out.push('X-Ggrok-Peer', signature);
  return out;
}

/** What a forward reports when it ends: the status answered (0 when the peer could not be reached). */
export type ForwardDone = (status: number, bytesIn: number, bytesOut: number) => void;

/**
 * Forwards a plain request to a peer at `peerUrl` and streams the peer's answer back. A peer that cannot be reached
 * gets the visitor a 502 page from `fail`; an answer cut midway cuts the visitor's response.
 */
export function forwardRequestToPeer(
  req: IncomingMessage,
  res: ServerResponse,
  peerUrl: string,
  signature: string,
  fail: (why: string) => void,
): void {
  const out = peerRequest(req, peerUrl, signature, false);
  out.on('error', (err) => {
    if (!res.headersSent) fail(`the instance holding the tunnel did not answer (${err.message})`);
    else res.destroy();
  });
  out.on('response', (answer) => {
    const headers = stripHopByHop(answer.rawHeaders);
    res.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
    answer.on('data', (chunk: Buffer) => {
      if (!res.write(chunk)) answer.pause();
    });
    res.on('drain', () => answer.resume());
    answer.on('end', () => {
      if (answer.rawTrailers.length > 0) {
        const pairs: [string, string][] = [];
        for (let i = 0; i < answer.rawTrailers.length; i += 2)
          pairs.push([answer.rawTrailers[i]!, answer.rawTrailers[i + 1]!]);
        res.addTrailers(pairs);
      }
      res.end();
    });
    answer.on('close', () => {
      if (!answer.complete) res.destroy(); // cut, never presented as complete
    });
  });
  res.on('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  req.pipe(out);
}

/** Forwards an upgrade to a peer; after its 101 the two sockets are joined, bytes that came with it included. */
export function forwardUpgradeToPeer(
  req: IncomingMessage,
  socket: Duplex,
  early: Buffer,
  peerUrl: string,
  signature: string,
  fail: (why: string) => void,
): void {
  const out = peerRequest(req, peerUrl, signature, true);
  out.on('error', (err) => fail(`the instance holding the tunnel did not answer (${err.message})`));
  out.on('upgrade', (answer, peer, head) => {
    peer.on('error', () => socket.destroy());
    socket.on('error', () => peer.destroy());
    socket.write(
      `HTTP/1.1 ${answer.statusCode ?? 101} ${answer.statusMessage ?? 'Switching Protocols'}\r\n` +
        `${headerLines(stripHopByHop(answer.rawHeaders, true))}\r\n`,
    );
    if (head.length > 0) socket.write(head);
    if (early.length > 0) peer.write(early);
    peer.pipe(socket);
    socket.pipe(peer);
  });
  out.on('response', (answer) => {
    const headers = [...stripHopByHop(answer.rawHeaders), 'Connection', 'close'];
    socket.write(
      `HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n${headerLines(headers)}\r\n`,
    );
    answer.pipe(socket);
  });
  socket.on('close', () => out.destroy());
  out.end();
}
