// The benchmark's "local app": a tiny HTTP server on 127.0.0.1 (port 0) that prints {"port":N} when ready.
//   GET  /small             200, a ~100-byte body
//   GET  /download?bytes=N  N bytes in 64 KiB chunks from one preallocated buffer, with backpressure
//   POST /upload            reads the body, answers {"bytes":N,"sha256":"…"}
//   POST /echo              streams the request body back as it arrives
import { createHash } from 'node:crypto';
import http from 'node:http';
import { pipeline } from 'node:stream';
import { CHUNK_BYTES, patternChunk } from './lib.mjs';

const SMALL = Buffer.from(`${'ggrok benchmark small response body '.repeat(3).slice(0, 99)}\n`);
const CHUNK = patternChunk();
const MAX_DOWNLOAD_BYTES = 64 * 1024 ** 3;

function download(req, res, url) {
  const bytes = Number(url.searchParams.get('bytes'));
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > MAX_DOWNLOAD_BYTES) {
    res.writeHead(400, { 'Content-Type': 'text/plain' });
    return void res.end('bad bytes\n');
  }
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': bytes });
  let left = bytes;
  let gone = false;
  res.on('close', () => (gone = true));
  const pump = () => {
    while (left > 0 && !gone) {
      const n = Math.min(left, CHUNK_BYTES);
      left -= n;
      if (!res.write(n === CHUNK_BYTES ? CHUNK : CHUNK.subarray(0, n))) return void res.once('drain', pump);
    }
    if (!gone) res.end();
  };
  pump();
}

function upload(req, res) {
  const hash = createHash('sha256');
  let bytes = 0;
  req.on('data', (c) => {
    bytes += c.length;
    hash.update(c);
  });
  req.on('end', () => {
    const body = JSON.stringify({ bytes, sha256: hash.digest('hex') });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
}

function echo(req, res) {
  const headers = { 'Content-Type': 'application/octet-stream' };
  if (req.headers['content-length'] !== undefined) headers['Content-Length'] = req.headers['content-length'];
  res.writeHead(200, headers);
  pipeline(req, res, () => {});
}

const server = http.createServer((req, res) => {
  if (req.url === '/small') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': SMALL.length });
    return void res.end(SMALL);
  }
  const url = new URL(req.url ?? '/', 'http://local');
  if (url.pathname === '/download' && req.method === 'GET') return download(req, res, url);
  if (url.pathname === '/upload' && req.method === 'POST') return upload(req, res);
  if (url.pathname === '/echo' && req.method === 'POST') return echo(req, res);
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
});
server.keepAliveTimeout = 120_000;
server.requestTimeout = 0;

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port, pid: process.pid })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
