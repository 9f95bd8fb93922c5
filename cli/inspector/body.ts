// How a captured body is shown: JSON pretty-printed, text as text, binary summarised (decompressed first if it can be).
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import type { HeaderList } from '../../protocol/frames.js';
import { getHeader } from '../../protocol/headers.js';
import type { BodyView } from './api.js';

export type { BodyContent, BodyView } from './api.js';

/** Bytes in a human unit: 512 B, 12.1 KiB, 3.0 MiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(1)} GiB`;
}

/** The media type without parameters, lowercased ("" when absent). */
export function mimeType(contentType: string | undefined): string {
  return contentType?.split(';')[0]?.trim().toLowerCase() ?? '';
}

function isJsonMime(m: string): boolean {
  return m === 'application/json' || m === 'text/json' || m.endsWith('+json');
}

/** Decompresses a whole body for display; undefined when it is not one of the known encodings or is broken. */
export function decodeContent(bytes: Buffer, encoding: string, maxBytes: number): Buffer | undefined {
  const options = { maxOutputLength: Math.max(1, maxBytes) };
  try {
    switch (encoding) {
      case 'gzip':
      case 'x-gzip':
        return zlib.gunzipSync(bytes, options);
      case 'deflate':
        try {
          return zlib.inflateSync(bytes, options);
        } catch {
          return zlib.inflateRawSync(bytes, options); // some servers send raw deflate
        }
      case 'br':
        return zlib.brotliDecompressSync(bytes, options);
      default:
        return undefined;
    }
  } catch {
    return undefined;
  }
}

/** `bytes` without a UTF-8 sequence cut off at the end (a capture may stop mid-character). */
function withoutCutCharacter(bytes: Buffer): Buffer {
  for (let back = 1; back <= Math.min(4, bytes.length); back++) {
    const b = bytes[bytes.length - back]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: look further back
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? bytes.subarray(0, bytes.length - back) : bytes;
  }
  return bytes;
}

/** Valid UTF-8 without control characters other than tab, newlines and form feed. */
function readableText(bytes: Buffer, cut: boolean): string | undefined {
  const b = cut ? withoutCutCharacter(bytes) : bytes;
  if (!isUtf8(b)) return undefined;
  const sample = b.subarray(0, 8192);
  for (const c of sample)
    if ((c < 0x20 && c !== 9 && c !== 10 && c !== 12 && c !== 13) || c === 0x7f) return undefined;
  return b.toString('utf8');
}

const MAGIC: [string, (b: Buffer) => boolean, (b: Buffer) => string][] = [
  [
    'PNG image',
    (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
    (b) => (b.length >= 24 ? ` ${b.readUInt32BE(16)}×${b.readUInt32BE(20)}` : ''),
  ],
  ['JPEG image', (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff, () => ''],
  [
    'GIF image',
    (b) => b.subarray(0, 4).toString('latin1') === 'GIF8',
    (b) => (b.length >= 10 ? ` ${b.readUInt16LE(6)}×${b.readUInt16LE(8)}` : ''),
  ],
  [
    'WebP image',
    (b) => b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP',
    () => '',
  ],
  ['PDF document', (b) => b.subarray(0, 5).toString('latin1') === '%PDF-', () => ''],
  ['ZIP archive', (b) => b.subarray(0, 4).equals(Buffer.from([0x50, 0x4b, 0x03, 0x04])), () => ''],
  ['gzip data', (b) => b[0] === 0x1f && b[1] === 0x8b, () => ''],
  ['WebAssembly module', (b) => b.subarray(0, 4).equals(Buffer.from([0, 0x61, 0x73, 0x6d])), () => ''],
  ['MP4/ISO media', (b) => b.subarray(4, 8).toString('latin1') === 'ftyp', () => ''],
  ['Ogg media', (b) => b.subarray(0, 4).toString('latin1') === 'OggS', () => ''],
  ['web font', (b) => ['wOFF', 'wOF2'].includes(b.subarray(0, 4).toString('latin1')), () => ''],
  ['ICO image', (b) => b.subarray(0, 4).equals(Buffer.from([0, 0, 1, 0])), () => ''],
];

/** One line describing binary bytes: what they look like, and how many there are. */
export function summarizeBinary(bytes: Buffer, size: number, mime: string): string {
  for (const [label, test, detail] of MAGIC)
    if (test(bytes)) return `${label}${detail(bytes)}, ${formatBytes(size)}`;
  return `${mime || 'binary data'}, ${formatBytes(size)}`;
}

/**
 * Turns captured bytes into what the UI and the API show. A complete body with a known Content-Encoding is
 * shown decompressed (up to `maxDecodedBytes`); JSON is pretty-printed when it is complete and parses.
 */
export function renderBody(
  bytes: Buffer,
  size: number,
  headers: HeaderList | undefined,
  maxDecodedBytes: number,
): BodyView {
  const truncated = size > bytes.length;
  const contentType = headers && getHeader(headers, 'content-type');
  const encoding = headers && getHeader(headers, 'content-encoding')?.trim().toLowerCase();
  const view: BodyView = { kind: 'empty', size, captured: bytes.length, truncated };
  if (contentType) view.contentType = contentType;
  if (encoding && encoding !== 'identity') view.contentEncoding = encoding;
  if (size === 0) return view;

  let body = bytes;
  let cut = truncated;
  if (view.contentEncoding && !truncated) {
    const decoded = decodeContent(bytes, view.contentEncoding, maxDecodedBytes);
    if (decoded) {
      body = decoded;
      view.decoded = true;
      view.decodedSize = decoded.length;
      cut = false;
    }
  }
  const mime = mimeType(contentType);
  const undecodable = view.contentEncoding !== undefined && !view.decoded;
  const text = undecodable ? undefined : readableText(body, cut);
  if (text !== undefined) {
    const trimmed = text.trimStart();
    const jsonish = isJsonMime(mime) || ((mime === '' || mime === 'text/plain') && /^[[{]/.test(trimmed));
    if (jsonish && !cut) {
      try {
        view.text = JSON.stringify(JSON.parse(text), null, 2);
        view.kind = 'json';
        return view;
      } catch {
        // not JSON after all: shown as text
      }
    }
    // Readable text is shown as text whatever the declared type (application/octet-stream included).
    view.kind = 'text';
    view.text = text;
    return view;
  }
  view.kind = 'binary';
  view.base64 = body.toString('base64');
  view.summary = summarizeBinary(body, view.decoded ? body.length : size, mime);
  if (undecodable) view.summary += ` (${view.contentEncoding}-encoded)`;
  return view;
}
