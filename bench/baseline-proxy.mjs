// Baselines for bench/bounds.mjs, one per process: `node bench/baseline-proxy.mjs <pipe|http> <target port>`.
//   pipe: a raw TCP pipe (no HTTP parsing at all), the least work any Node process in the path can do;
//   http: the textbook node:http reverse proxy (keep-alive Agent), what most Node tunnels and proxies are built on.
// Prints "port N" once listening on 127.0.0.1.
import http from 'node:http';
import net from 'node:net';

const [kind, targetArg] = process.argv.slice(2);
const target = Number(targetArg);

function pipeProxy() {
  return net.createServer((visitor) => {
    const upstream = net.connect({ host: '127.0.0.1', port: target, noDelay: true });
    visitor.setNoDelay(true);
    visitor.pipe(upstream).pipe(visitor);
    visitor.on('error', () => upstream.destroy());
    upstream.on('error', () => visitor.destroy());
  });
}

function httpProxy() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  return http.createServer((req, res) => {
    const upstream = http.request(
      { host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      res.statusCode = 502;
      res.end();
    });
    req.pipe(upstream);
  });
}

if (kind !== 'pipe' && kind !== 'http') {
  process.stderr.write('usage: node bench/baseline-proxy.mjs <pipe|http> <target port>\n');
  process.exit(2);
}
const server = kind === 'pipe' ? pipeProxy() : httpProxy();
server.listen(0, '127.0.0.1', () => console.log(`port ${server.address().port}`));
