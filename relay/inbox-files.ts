// --inbox-dir: kept requests as files (one per request, written to a temporary name then renamed), read back as hostile.
import { mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { BodyKind, FrameType, isInboxPattern, WIRE_LIMITS, type BodyKindValue } from '../protocol/frames.js';
import { declaredLength } from '../protocol/headers.js';
import { AccessPolicy } from './access.js';
import type { HoldRecord, InboxStore, StoredRequest } from './inbox.js';
import type { RelayEvent } from './log.js';
import { isValidName } from './registry.js';

/** An owner as the relay derives it from a token (a hex digest), checked in every file read back. */
const OWNER_ID = /^[0-9a-f]{16,128}$/;

/** A kept request's file name: its id (which newId() makes) and this suffix; nothing else in the directory is read. */
const FILE = /^(ib_[A-Za-z0-9_-]{16})\.req$/;
/** An away tunnel's hold: `hold.<name>.json`. */
const HOLD_FILE = /^hold\.([a-z0-9-]{1,63})\.json$/;
/** Largest hold file: 2 × 100 access rules of 512 characters and 32 patterns of 512, with room for JSON. */
const MAX_HOLD_BYTES = 256 * 1024;
/** Bytes of a file's first line (the head as JSON) at most: a header list is at most 128 KiB of characters. */
const MAX_META_BYTES = 4 * WIRE_LIMITS.MAX_HEADER_LIST_BYTES + 2 * WIRE_LIMITS.MAX_TARGET_BYTES;
const FORMAT_VERSION = 1;

/** What a file's first line holds. */
interface Meta {
  v: number;
  id: string;
  name: string;
  owner: string;
  seq: number;
  receivedAt: number;
  method: string;
  target: string;
  headers: string[];
  body: number;
  attempts: number;
  state: string;
  lastError?: string;
  bytes: number;
}

/**
 * Kept requests in a directory. Each is one file: a line of JSON (the head and bookkeeping), then the body's bytes.
 * A file is written under a temporary name and renamed, so a crash leaves the old file or the new one, never half of
 * one. Operations on one request run in order; different requests' files are written independently.
 */
export class InboxFiles implements InboxStore {
  /** The last operation queued per request id: the next one waits for it. */
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    private readonly dir: string,
    private readonly limits: { maxBodyBytes: number; maxTotalBytes: number },
    private readonly log: (event: RelayEvent) => void,
  ) {
    // Bodies may hold secrets (webhook payloads): only the relay's user reads them.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Reads every kept request (oldest first) and every hold back, at start; files that fail any check are logged and
   * skipped.
   */
  load(): { requests: StoredRequest[]; holds: HoldRecord[] } {
    const out: StoredRequest[] = [];
    const holds: HoldRecord[] = [];
    // Never read more than the inboxes may hold, whatever the directory holds.
    let budget = this.limits.maxTotalBytes;
    for (const entry of readdirSync(this.dir)) {
      const file = path.join(this.dir, entry);
      // A write a crash interrupted: the request's previous version, if any, is still under its own name.
      if (entry.endsWith('.tmp')) {
        tryUnlink(file);
        continue;
      }
      const h = HOLD_FILE.exec(entry);
      if (h) {
        try {
          holds.push(this.readHold(file, h[1]!));
        } catch (err) {
          this.log({ event: 'inbox_file_rejected', file: entry, why: (err as Error).message.slice(0, 200) });
        }
        continue;
      }
      const m = FILE.exec(entry);
      if (!m) continue;
      try {
        const r = this.read(file, m[1]!, budget);
        budget -= r.data.length;
        out.push(r);
      } catch (err) {
        this.log({ event: 'inbox_file_rejected', file: entry, why: (err as Error).message.slice(0, 200) });
      }
    }
    return { requests: out.sort((a, b) => a.seq - b.seq), holds };
  }

  held(h: HoldRecord): void {
    const file = this.holdFile(h.name);
    this.queue(`hold.${h.name}`, () =>
      writeAtomically(file, [Buffer.from(JSON.stringify({ v: FORMAT_VERSION, ...h }))]),
    );
  }

  released(name: string): void {
    this.queue(`hold.${name}`, () => unlink(this.holdFile(name)).catch(() => {}));
  }

  private holdFile(name: string): string {
    return path.join(this.dir, `hold.${name}.json`);
  }

  /** A hold, checked as if a stranger wrote it: the access rules must build a policy, the patterns pass the wire's rules. */
  private readHold(file: string, name: string): HoldRecord {
    if (statSync(file).size > MAX_HOLD_BYTES) throw new Error('file too large');
    const m = JSON.parse(readFileSync(file, 'utf8')) as Partial<HoldRecord> & { v?: unknown };
    if (typeof m !== 'object' || m === null || m.v !== FORMAT_VERSION) throw new Error('unknown format');
    if (m.name !== name || !isValidName(name)) throw new Error('name does not match the file name');
    if (typeof m.owner !== 'string' || !OWNER_ID.test(m.owner)) throw new Error('bad owner');
    if (typeof m.heldUntil !== 'number' || !Number.isSafeInteger(m.heldUntil))
      throw new Error('bad hold time');
    const patterns = m.patterns;
    if (
      !Array.isArray(patterns) ||
      patterns.length === 0 ||
      patterns.length > WIRE_LIMITS.MAX_INBOX_PATTERNS ||
      !patterns.every((p) => typeof p === 'string' && isInboxPattern(p))
    )
      throw new Error('bad patterns');
    let access: HoldRecord['access'];
    if (m.access !== undefined) {
      const a = m.access as Partial<NonNullable<HoldRecord['access']>>;
      const list = (v: unknown): v is string[] =>
        Array.isArray(v) &&
        v.length <= WIRE_LIMITS.MAX_ACCESS_RULES &&
        v.every((x) => typeof x === 'string' && x.length <= 512);
      if (typeof a !== 'object' || a === null || !list(a.basicAuth) || !list(a.allowIp))
        throw new Error('bad access rules');
      if (typeof a.optionsWithoutAuth !== 'boolean') throw new Error('bad access rules');
      access = { basicAuth: a.basicAuth, allowIp: a.allowIp, optionsWithoutAuth: a.optionsWithoutAuth };
      new AccessPolicy(access); // throws on a rule the relay would refuse in a hello
    }
    return { name, owner: m.owner, patterns, heldUntil: m.heldUntil, ...(access ? { access } : {}) };
  }

  saved(r: StoredRequest): void {
    this.queue(r.id, () => this.write(r));
  }

  removed(r: StoredRequest): void {
    this.queue(r.id, () => unlink(this.fileOf(r.id)).catch(() => {}));
  }

  /** Resolves once every write and removal queued so far is done. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
  }

  private queue(id: string, op: () => Promise<void>): void {
    const next = (this.pending.get(id) ?? Promise.resolve())
      .then(op)
      .catch((err: unknown) =>
        this.log({ event: 'inbox_file_error', id, why: (err as Error).message.slice(0, 200) }),
      )
      .finally(() => {
        if (this.pending.get(id) === next) this.pending.delete(id);
      });
    this.pending.set(id, next);
  }

  private fileOf(id: string): string {
    return path.join(this.dir, `${id}.req`);
  }

  private async write(r: StoredRequest): Promise<void> {
    const meta: Meta = {
      v: FORMAT_VERSION,
      id: r.id,
      name: r.name,
      owner: r.owner,
      seq: r.seq,
      receivedAt: r.receivedAt,
      method: r.method,
      target: r.target,
      headers: r.headers,
      body: r.body,
      attempts: r.attempts,
      state: r.state,
      ...(r.lastError !== undefined ? { lastError: r.lastError } : {}),
      bytes: r.data.length,
    };
    await writeAtomically(this.fileOf(r.id), [Buffer.from(`${JSON.stringify(meta)}\n`), r.data]);
  }

  /** One file, checked as if a stranger wrote it: sizes first, then every field, then the head as the wire checks it. */
  private read(file: string, id: string, budget: number): StoredRequest {
    const size = statSync(file).size;
    if (size > MAX_META_BYTES + this.limits.maxBodyBytes) throw new Error('file too large');
    if (size > budget + MAX_META_BYTES) throw new Error("over the inboxes' total size");
    const bytes = readFileSync(file);
    const nl = bytes.indexOf(10);
    if (nl < 0 || nl > MAX_META_BYTES) throw new Error('no head line');
    const m = JSON.parse(bytes.subarray(0, nl).toString('utf8')) as Partial<Meta>;
    const data = bytes.subarray(nl + 1);
    const int = (v: unknown, max: number): v is number =>
      typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
    if (typeof m !== 'object' || m === null || m.v !== FORMAT_VERSION) throw new Error('unknown format');
    if (m.id !== id) throw new Error('id does not match the file name');
    if (typeof m.name !== 'string' || !isValidName(m.name)) throw new Error('bad name');
    if (typeof m.owner !== 'string' || !OWNER_ID.test(m.owner)) throw new Error('bad owner');
    if (!int(m.seq, Number.MAX_SAFE_INTEGER) || !int(m.receivedAt, Number.MAX_SAFE_INTEGER))
      throw new Error('bad seq or time');
    if (!int(m.attempts, 1000)) throw new Error('bad attempts');
    if (m.state !== 'queued' && m.state !== 'failed') throw new Error('bad state');
    if (m.lastError !== undefined && (typeof m.lastError !== 'string' || m.lastError.length > 1000))
      throw new Error('bad last error');
    if (!int(m.bytes, this.limits.maxBodyBytes) || m.bytes !== data.length)
      throw new Error('body length differs');
    const body = m.body as BodyKindValue;
    if (body !== BodyKind.None && body !== BodyKind.Length && body !== BodyKind.Chunked)
      throw new Error('bad body kind');
    if (body === BodyKind.None && data.length > 0) throw new Error('body without a body kind');
    if (!Array.isArray(m.headers) || !m.headers.every((h) => typeof h === 'string'))
      throw new Error('bad headers');
    if (typeof m.method !== 'string' || typeof m.target !== 'string') throw new Error('bad method or target');
    // The head must pass exactly the checks a Request frame from the network passes.
    const head = decodeFrame(
      encodeFrame({
        type: FrameType.Request,
        id: 1,
        method: m.method,
        target: m.target,
        headers: m.headers,
        body,
        upgrade: false,
        tunnel: 0,
      }),
    );
    if (head.type !== FrameType.Request) throw new Error('bad head');
    if (body === BodyKind.Length && declaredLength(head.headers) !== data.length)
      throw new Error('Content-Length differs from the body');
    return {
      id,
      name: m.name,
      owner: m.owner,
      seq: m.seq,
      receivedAt: m.receivedAt,
      method: head.method,
      target: head.target,
      headers: head.headers,
      body,
      // A copy: the file's buffer may be much larger than the body alone.
      data: Buffer.from(data),
      attempts: m.attempts,
      state: m.state,
      ...(m.lastError !== undefined ? { lastError: m.lastError } : {}),
    };
  }
}

/** Writes `file` under a temporary name, syncs it and renames it over the old one: never half a file. */
async function writeAtomically(file: string, parts: Buffer[]): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writev(parts);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

function tryUnlink(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // gone already
  }
}
