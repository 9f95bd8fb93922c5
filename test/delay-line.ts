// A userspace delay line for TCP (tc/netem is not available here): every chunk is held `delayMs` in each direction,
// in order, with bounded buffering (the reading side is paused while too much is held) and the writer's backpressure.
import { once } from 'node:events';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Cleanup } from './helpers.js';

export interface DelayLine {
  port: number;
  /** Bytes held right now, over all connections and both directions. */
  held(): number;
}

interface Held {
  chunk: Buffer;
  at: number;
}

/** Moves bytes from `from` to `to`, each chunk `delayMs` later; pauses `from` while `maxHeld` bytes wait. */
function delayPipe(
  from: Socket,
  to: Socket,
  delayMs: number,
  maxHeld: number,
  count: (n: number) => void,
): void {
  const queue: Held[] = [];
  let head = 0;
  let held = 0;
  let ended = false;
  let timer: NodeJS.Timeout | undefined;
  let waitingDrain = false;
  const onDrain = (): void => {
    waitingDrain = false;
    flush();
  };
  const flush = (): void => {
    timer = undefined;
    const now = performance.now();
    while (head < queue.length && queue[head]!.at <= now) {
      const { chunk } = queue[head++]!;
      held -= chunk.length;
      count(-chunk.length);
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
  const schedule = (): void => {
    if (timer || waitingDrain || head >= queue.length) return;
    timer = setTimeout(flush, Math.max(0, queue[head]!.at - performance.now()));
  };
  from.on('data', (chunk: Buffer) => {
    queue.push({ chunk, at: performance.now() + delayMs });
    held += chunk.length;
    count(chunk.length);
    if (held >= maxHeld) from.pause();
    schedule();
  });
  from.on('end', () => {
    ended = true;
    if (head === queue.length && !waitingDrain) to.end();
  });
}

/**
 * Listens on 127.0.0.1 port 0 and forwards each connection to `targetPort`, `delayMs` one way (so a round trip
 * through it takes 2 × delayMs more). Each direction holds at most `maxHeldBytes` before it stops reading.
 */
export async function startDelayLine(
  cleanup: Cleanup,
  targetPort: number,
  { delayMs, maxHeldBytes = 32 * 1024 * 1024 }: { delayMs: number; maxHeldBytes?: number },
): Promise<DelayLine> {
  const sockets = new Set<Socket>();
  let total = 0;
  const count = (n: number): void => void (total += n);
  // Half-open on both sides: an end travels through the delay like data, behind the bytes queued before it.
  const server = net.createServer({ allowHalfOpen: true }, (a) => {
    const b = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
    for (const s of [a, b]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => {});
      s.once('close', (hadError) => {
        sockets.delete(s);
        if (!hadError) return;
        a.destroy();
        b.destroy();
      });
    }
    delayPipe(a, b, delayMs, maxHeldBytes, count);
    delayPipe(b, a, delayMs, maxHeldBytes, count);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return { port: (server.address() as AddressInfo).port, held: () => total };
}
