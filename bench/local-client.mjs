// Side benchmark: CPU per request of the client's local-side HTTP client (dist/cli/local-pool.js) against node:http's
// ClientRequest + keep-alive Agent, on the same local server in another process. Uses the compiled dist/.
//   node bench/local-client.mjs [--requests 60000] [--concurrency 50] [--rounds 3]
import http from 'node:http';
import { parseArgs } from 'node:util';
import { killAll, median, spawnNode, waitForLine } from './lib.mjs';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '60000' },
    concurrency: { type: 'string', default: '50' },
    rounds: { type: 'string', default: '3' },
  },
});
const N = Number(values.requests);
const C = Number(values.concurrency);
const { LocalPool } = await import('../dist/cli/local-pool.js');
const HEADERS = [
  'Host',
  'bench.localhost',
  'User-Agent',
  'bench',
  'Accept',
  '*/*',
  'X-Forwarded-For',
  '127.0.0.1',
];

/** Runs N GETs, C at a time, with `one(done)` starting one request; returns µs of this process's CPU per request. */
function measure(one) {
  return new Promise((resolve) => {
    let started = 0;
    let finished = 0;
    const cpu0 = process.cpuUsage();
    const next = () => {
      if (started >= N) return;
      started++;
      one(() => {
        if (++finished === N) {
          const c = process.cpuUsage(cpu0);
          resolve((c.user + c.system) / N);
        } else next();
      });
    };
    for (let i = 0; i < C; i++) next();
  });
}

function nodeHttp(port) {
  const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo' });
  return measure((done) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/small', headers: HEADERS, agent });
    req.on('response', (res) => {
      res.on('data', () => {});
      res.on('end', done);
    });
    req.end();
  }).finally(() => agent.destroy());
}

function lean(port) {
  const pool = new LocalPool({ protocol: 'http:', host: '127.0.0.1', port, insecure: false });
  let head = 'GET /small HTTP/1.1\r\n';
  for (let i = 0; i < HEADERS.length; i += 2) head += `${HEADERS[i]}: ${HEADERS[i + 1]}\r\n`;
  head += '\r\n';
  return measure((done) => {
    const conn = pool.take() ?? pool.open(false);
    conn.begin(
      {
        onHead() {},
        onBody() {},
        onDone() {
          conn.release();
          done();
        },
        onUpgrade() {},
        onConnectionLost(err) {
          throw err;
        },
        onWritable() {},
      },
      'GET',
      false,
    );
    conn.socket.write(head, 'latin1');
  }).finally(() => pool.close());
}

try {
  const server = spawnNode('local server', [new URL('./local-server.mjs', import.meta.url).pathname]);
  const port = Number((await waitForLine(server, /^\{"port":(\d+)/))[1]);
  const rows = { 'node:http': [], lean: [] };
  for (let r = 0; r < Number(values.rounds); r++) {
    rows['node:http'].push(await nodeHttp(port));
    rows.lean.push(await lean(port));
  }
  for (const [name, us] of Object.entries(rows))
    console.log(
      `${name.padEnd(10)} ${median(us).toFixed(1)} µs CPU per request (rounds: ${us.map((u) => u.toFixed(1)).join(', ')})`,
    );
} finally {
  killAll();
}
