// WebSocket load for bench/ws.mjs, one measurement per process. Usage: node ws-load.mjs '<json>'
//   {mode:'echo', url, host?, seconds, bytes}         -> {roundTrips, seconds, perSecond, p50Ms, p99Ms}
//   {mode:'throughput', url, host?, totalBytes, messageBytes, inFlight} -> {bytes, seconds, mibPerSecond}
//   {mode:'idle', url, host?, channels}               -> prints "open N", holds the sockets until killed
//   {mode:'tunnels', server, token, port, count}      -> prints "open N", holds N tunnel clients until killed
import WebSocket from 'ws';

const args = JSON.parse(process.argv[2]);
const options = {
  perMessageDeflate: false,
  headers: args.host ? { Host: args.host } : {},
  maxPayload: 64 * 1024 * 1024,
};
const open = () =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(args.url, options);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });

async function echo() {
  const ws = await open();
  const payload = Buffer.alloc(args.bytes, 7);
  const times = [];
  const until = Date.now() + args.seconds * 1000;
  let started = process.hrtime.bigint();
  await new Promise((resolve) => {
    ws.on('message', () => {
      const now = process.hrtime.bigint();
      times.push(Number(now - started) / 1e6);
      if (Date.now() >= until || times.length >= 5_000_000) return resolve();
      started = now;
      ws.send(payload);
    });
    ws.send(payload);
  });
  ws.terminate();
  const sorted = [...times].sort((a, b) => a - b);
  const seconds = times.reduce((a, b) => a + b, 0) / 1000;
  return {
    roundTrips: times.length,
    seconds,
    perSecond: times.length / seconds,
    p50Ms: sorted[Math.floor(sorted.length / 2)],
    p99Ms: sorted[Math.floor(sorted.length * 0.99)],
  };
}

async function throughput() {
  const ws = await open();
  const message = Buffer.alloc(args.messageBytes, 3);
  const count = Math.ceil(args.totalBytes / args.messageBytes);
  let sent = 0;
  let received = 0;
  let bytes = 0;
  const started = process.hrtime.bigint();
  await new Promise((resolve) => {
    const pump = () => {
      while (sent < count && sent - received < args.inFlight) {
        sent++;
        ws.send(message);
      }
    };
    ws.on('message', (data) => {
      received++;
      bytes += data.length;
      if (received === count) return resolve();
      pump();
    });
    pump();
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  ws.terminate();
  return { bytes, seconds, mibPerSecond: bytes / 1024 / 1024 / seconds };
}

async function hold(openOne, count) {
  const held = [];
  for (let i = 0; i < count; i += 100) {
    const batch = await Promise.all(Array.from({ length: Math.min(100, count - i) }, () => openOne()));
    held.push(...batch);
  }
  console.log(`open ${held.length}`);
  // Hold them until the benchmark kills this process; stop by itself after 10 minutes at the latest.
  await new Promise((resolve) => setTimeout(resolve, 10 * 60_000));
  return { held: held.length };
}

let result;
if (args.mode === 'echo') result = await echo();
else if (args.mode === 'throughput') result = await throughput();
else if (args.mode === 'idle') result = await hold(open, args.channels);
else if (args.mode === 'tunnels') {
  const { TunnelClient } = await import(new URL('../dist/cli/client.js', import.meta.url).href);
  const { parseTarget } = await import(new URL('../dist/cli/local-request.js', import.meta.url).href);
  result = await hold(async () => {
    const client = new TunnelClient({
      server: args.server,
      token: args.token,
      target: parseTarget(String(args.port)),
    });
    await client.start();
    return client;
  }, args.count);
}
console.log(`result ${JSON.stringify(result)}`);
process.exit(0);
