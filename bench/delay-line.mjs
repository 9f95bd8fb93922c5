// A userspace TCP delay line for bench/delay.mjs (tc/netem is not available here), one per process:
// `node bench/delay-line.mjs <target port> <one-way delay ms> [max held MiB per direction, default 32]`.
// Every chunk read from one side is written to the other `delay` ms later, in order. Each direction holds at most
// the given number of bytes before it stops reading (TCP backpressure onto the sender), and waits for 'drain' when
// the far side is slow. Prints "port N" once listening on 127.0.0.1. test/delay-line.ts is the suite's twin.
import net from 'node:net';

const [targetArg, delayArg, maxArg] = process.argv.slice(2);
const target = Number(targetArg);
const delayMs = Number(delayArg);
const maxHeld = Number(maxArg ?? 32) * 1024 * 1024;

/** Moves bytes from `from` to `to`, each chunk `delayMs` later, holding at most `maxHeld` bytes. */
function delayPipe(from, to) {
  const queue = [];
  let head = 0;
  let held = 0;
  let ended = false;
  let timer;
  let waitingDrain = false;
  const onDrain = () => {
    waitingDrain = false;
    flush();
  };
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (head < queue.length && queue[head].at <= now) {
      const chunk = queue[head].chunk;
      queue[head++] = undefined;
      held -= chunk.length;
      if (!to.write(chunk)) {
        waitingDrain = true;
        to.once('drain', onDrain);
        break;
      }
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    if (held < maxHeld / 2 && from.isPaused()) from.resume();
    if (head === queue.length && ended && !waitingDrain) to.end();
    else schedule();
  };
  const schedule = () => {
    if (timer || waitingDrain || head >= queue.length) return;
    timer = setTimeout(flush, Math.max(0, queue[head].at - performance.now()));
  };
  from.on('data', (chunk) => {
    queue.push({ chunk, at: performance.now() + delayMs });
    held += chunk.length;
    if (held >= maxHeld) from.pause();
    schedule();
  });
  from.on('end', () => {
    ended = true;
    if (head === queue.length && !waitingDrain) to.end();
  });
}

// Half-open on both sides: an end travels through the delay like data, behind the bytes queued before it.
const server = net.createServer({ allowHalfOpen: true }, (a) => {
  const b = net.connect({ host: '127.0.0.1', port: target, noDelay: true, allowHalfOpen: true });
  a.setNoDelay(true);
  for (const s of [a, b]) {
    s.on('error', () => {});
    s.once('close', (hadError) => {
      if (!hadError) return;
      a.destroy();
      b.destroy();
    });
  }
  delayPipe(a, b);
  delayPipe(b, a);
});
server.listen(0, '127.0.0.1', () => console.log(`port ${server.address().port}`));
