// Load generator, run as its own process: `node bench/load.mjs '<json>'` performs one measurement and prints
// JSON lines on stdout ({"event":"stalled",…} progress events, then one {"event":"result",…}).
// Modes: small (GET /small with wrk, or autocannon), download, upload (POST /echo, or `path`), stall, integrity.
import { execFile } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import http from 'node:http';
import autocannon from 'autocannon';
import { CHUNK_BYTES, MiB, patternChunk } from './lib.mjs';

const args = JSON.parse(process.argv[2] ?? '{}');
const emit = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
// Every mode is bounded in time even if a server hangs.
const hardTimer = setTimeout(() => {
  emit({ event: 'result', ok: false, error: `hard timeout after ${args.hardTimeoutMs} ms` });
  process.exit(3);
}, args.hardTimeoutMs ?? 300_000);
hardTimer.unref();

const headers = args.host ? { host: args.host } : {};
const base = { host: '127.0.0.1', port: args.port, agent: false };

/** Small GETs at N connections for `duration` seconds. */
async function small() {
  const instance = autocannon({
    url: `http://127.0.0.1:${args.port}/small`,
    connections: args.connections ?? 50,
    duration: args.duration ?? 10,
    headers,
  });
  // autocannon's histogram keeps whole milliseconds; keep every response time (float ms) for exact percentiles.
  let times = new Float64Array(1 << 20);
  let n = 0;
  instance.on('response', (_client, status, _bytes, ms) => {
    if (status < 200 || status > 299) return;
    if (n === times.length) {
      const bigger = new Float64Array(times.length * 2);
      bigger.set(times);
      times = bigger;
    }
    times[n++] = ms;
  });
  const cpu0 = process.cpuUsage();
  const r = await instance;
  const cpu = process.cpuUsage(cpu0);
  const sorted = times.subarray(0, n).sort();
  const pct = (p) => (n ? sorted[Math.min(n - 1, Math.floor((p / 100) * n))] : undefined);
  return {
    ok: r.errors === 0 && r.non2xx === 0 && r.timeouts === 0,
    reqPerSec: r.requests.average,
    total: r.requests.total,
    ok2xx: r['2xx'],
    p50: pct(50),
    p99: pct(99),
    meanLatency: n ? sorted.reduce((a, b) => a + b, 0) / n : undefined,
    tool: 'autocannon',
    runCpuMs: (cpu.user + cpu.system) / 1000,
    autocannonP50: r.latency.p50,
    autocannonP99: r.latency.p99,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    durationS: r.duration,
  };
}

/** wrk's duration with its unit ("512.00us", "1.20ms", "2.01s") in milliseconds. */
function wrkMs(text) {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2]];
}

/**
 * Small GETs with Debian's wrk: one thread, C code, so the load tool takes far less of the two cores from the
 * processes under test than autocannon does. The shell's `times` reports wrk's CPU time; `timeout` bounds wrk itself
 * (killing the shell on a timeout would leave wrk running into the next measurement).
 */
async function smallWrk() {
  const hostHeader = args.host ? `-H 'Host: ${args.host}'` : '';
  const script = `timeout -s KILL ${(args.duration ?? 10) + 20} wrk -t1 -c${args.connections ?? 50} -d${args.duration ?? 10}s --latency ${hostHeader} http://127.0.0.1:${args.port}/small; times`;
  const out = await new Promise((resolve, reject) =>
    execFile('sh', ['-c', script], { timeout: ((args.duration ?? 10) + 30) * 1000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    ),
  );
  const field = (re) => re.exec(out)?.[1];
  const total = Number(field(/(\d+) requests in/));
  const seconds = wrkMs(field(/requests in ([\d.]+\w+),/) ?? '');
  const non2xx = Number(field(/Non-2xx or 3xx responses: (\d+)/) ?? 0);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = socketErrors ? socketErrors.slice(1, 4).reduce((a, b) => a + Number(b), 0) : 0;
  const timeouts = socketErrors ? Number(socketErrors[4]) : 0;
  // `times` prints the shell's user and system time, then its children's (wrk's).
  const [user, system] = [...out.matchAll(/(\d+)m([\d.]+)s/g)]
    .slice(-2)
    .map((m) => (Number(m[1]) * 60 + Number(m[2])) * 1000);
  return {
    ok: total > 0 && errors === 0 && non2xx === 0 && timeouts === 0,
    tool: 'wrk',
    reqPerSec: Number(field(/Requests\/sec:\s+([\d.]+)/)),
    total,
    ok2xx: total - non2xx,
    p50: wrkMs(field(/^\s+50%\s+(\S+)/m) ?? ''),
    p99: wrkMs(field(/^\s+99%\s+(\S+)/m) ?? ''),
    meanLatency: wrkMs(field(/Latency\s+(\S+)/) ?? ''),
    runCpuMs: user + system,
    childCpuMs: user + system,
    errors,
    timeouts,
    non2xx,
    durationS: seconds === undefined ? undefined : seconds / 1000,
  };
}

/** One GET /download?bytes=N, body consumed and counted (optionally hashed), timed from request to last byte. */
function download(bytes, { verify = false } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let got = 0;
    const hash = verify ? createHash('sha256') : undefined;
    const req = http.get({ ...base, path: `/download?bytes=${bytes}`, headers }, (res) => {
      const ttfbMs = performance.now() - t0;
      res.on('data', (c) => {
        got += c.length;
        hash?.update(c);
      });
      res.on('end', () => {
        clearTimeout(timer);
        const seconds = (performance.now() - t0) / 1000;
        resolve({
          ok: res.statusCode === 200 && got === bytes,
          status: res.statusCode,
          bytes: got,
          seconds,
          mibPerSec: got / MiB / seconds,
          ttfbMs,
          sha256: hash?.digest('hex'),
        });
      });
      res.on('error', (err) => finish(err));
    });
    const finish = (err) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.message, bytes: got });
    };
    req.on('error', finish);
    const timer = setTimeout(
      () => req.destroy(new Error(`download timed out after ${args.timeoutMs} ms`)),
      args.timeoutMs ?? 120_000,
    );
  });
}

/**
 * Streams `bytes` to `path` in 64 KiB chunks (with backpressure) while reading the response at the same time;
 * timed from request to the response's last byte.
 */
function upload(path, bytes, source) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let got = 0;
    const body = [];
    const req = http.request(
      {
        ...base,
        method: 'POST',
        path,
        headers: { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes) },
      },
      (res) => {
        res.on('data', (c) => {
          got += c.length;
          if (path !== '/echo') body.push(c);
        });
        res.on('end', () => {
          clearTimeout(timer);
          const seconds = (performance.now() - t0) / 1000;
          const echoed = path === '/echo';
          resolve({
            ok: res.statusCode === 200 && (!echoed || got === bytes),
            status: res.statusCode,
            bytes: echoed ? got : bytes,
            seconds,
            mibPerSec: bytes / MiB / seconds,
            body: echoed ? undefined : Buffer.concat(body).toString(),
          });
        });
        res.on('error', (err) => finish(err));
      },
    );
    const finish = (err) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.message, bytes: got });
    };
    req.on('error', finish);
    const timer = setTimeout(
      () => req.destroy(new Error(`upload timed out after ${args.timeoutMs} ms`)),
      args.timeoutMs ?? 120_000,
    );
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        const n = Math.min(CHUNK_BYTES, bytes - sent);
        const at = sent % source.length;
        const chunk = source.subarray(at, Math.min(at + n, source.length));
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

/** Starts a big download, reads `readFirst` bytes, then stops reading for `stallMs` (the public client stalls). */
function stall() {
  return new Promise((resolve) => {
    let got = 0;
    let stalled = false;
    const req = http.get({ ...base, path: `/download?bytes=${args.bytes}`, headers }, (res) => {
      res.on('data', (c) => {
        got += c.length;
        if (!stalled && got >= (args.readFirst ?? MiB)) {
          stalled = true;
          res.pause();
          emit({ event: 'stalled', received: got });
          setTimeout(() => {
            const received = got;
            req.destroy();
            resolve({
              ok: res.statusCode === 200,
              status: res.statusCode,
              received,
              stalledMs: args.stallMs,
            });
          }, args.stallMs ?? 5000);
        }
      });
      res.on('error', () => {});
    });
    req.on('error', (err) => {
      if (!stalled) resolve({ ok: false, error: err.message, received: got });
    });
  });
}

/** Checks that bytes survive the path unchanged both ways: sha256 of an upload and of a download. */
async function integrity() {
  const bytes = args.bytes ?? 4 * MiB;
  const data = randomFillSync(Buffer.allocUnsafe(bytes));
  const expectedUp = createHash('sha256').update(data).digest('hex');
  const up = await upload('/upload', bytes, data);
  let parsed = {};
  try {
    parsed = JSON.parse(up.body ?? '{}');
  } catch {
    // reported below as a mismatch
  }
  const chunk = patternChunk();
  const hash = createHash('sha256');
  for (let left = bytes; left > 0; left -= CHUNK_BYTES)
    hash.update(chunk.subarray(0, Math.min(CHUNK_BYTES, left)));
  const down = await download(bytes, { verify: true });
  const uploadOk = up.ok && parsed.bytes === bytes && parsed.sha256 === expectedUp;
  const downloadOk = down.ok && down.sha256 === hash.digest('hex');
  return { ok: uploadOk && downloadOk, uploadOk, downloadOk, bytes };
}

let result;
try {
  switch (args.mode) {
    case 'small':
      result = args.tool === 'wrk' ? await smallWrk() : await small();
      break;
    case 'download':
      result = await download(args.bytes);
      break;
    case 'upload': {
      // Random bytes (not a pattern) so nothing on the path can profit from compressible data.
      const source = randomFillSync(Buffer.allocUnsafe(4 * MiB));
      result = await upload(args.path ?? '/echo', args.bytes, source);
      break;
    }
    case 'stall':
      result = await stall();
      break;
    case 'integrity':
      result = await integrity();
      break;
    default:
      throw new Error(`unknown mode ${args.mode}`);
  }
} catch (err) {
  result = { ok: false, error: err.message };
}
const cpu = process.cpuUsage();
// A load tool run as a child (wrk) counts as part of the load.
const loadCpuMs = (cpu.user + cpu.system) / 1000 + (result.childCpuMs ?? 0);
emit({ event: 'result', mode: args.mode, ...result, loadCpuMs });
process.exit(0);
