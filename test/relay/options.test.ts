// Relay options: defaults declared once (RELAY_DEFAULTS) and read by the flags, --help and the README; validation.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_FLOW, WIRE_LIMITS } from '../../protocol/frames.js';
import { MAX_CONTROL_BACKLOG_BYTES } from '../../protocol/session.js';
import { AUTH_FAILURE_BURST, AUTH_FAILURE_REFILL_MS } from '../../relay/auth-failures.js';
import { FAIR_SHARE_FROM, FAIR_SHARE_MAX } from '../../relay/admission.js';
import { relayCommand } from '../../relay/main.js';
import { flowProblem, RELAY_DEFAULTS, resolveRelayOptions } from '../../relay/options.js';
import { createRelay } from '../../relay/relay.js';
import { Cleanup, ROOT, runCli } from '../helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const D = RELAY_DEFAULTS;

/** Every `ggrok relay` flag with a default, in the flag's own unit, as RELAY_DEFAULTS declares it. */
const FLAG_DEFAULTS: Record<string, number | string | boolean> = {
  '--port': D.port,
  '--max-requests': D.maxRequestsPerTunnel,
  '--max-channels': D.maxChannelsPerTunnel,
  '--rate-limit': D.streamsPerSecond,
  '--rate-limit-per-visitor': D.visitorStreamsPerSecond,
  '--max-tunnels-per-token': D.maxTunnelsPerToken,
  '--max-header-bytes': D.maxHeaderBytes,
  '--stream-window': D.flow.streamWindow / 1024,
  '--conn-window': D.flow.connWindow / 1024,
  '--headers-timeout': D.headersTimeoutMs,
  '--idle-timeout': D.idleStreamMs / 1000,
  '--wait-for-client': D.waitForClientMs,
  '--startup-grace': D.startupGraceMs,
  '--log-format': D.logFormat,
  '--access-log': D.accessLog,
  '--metrics-per-tunnel': D.metricsPerTunnel,
  '--inbox-status': D.inboxStatus,
  '--inbox-max-body': D.inboxMaxBodyBytes / 1024,
  '--inbox-max-requests': D.inboxMaxRequests,
  '--inbox-max-bytes': D.inboxMaxTunnelBytes / 1024 ** 2,
  '--inbox-max-total': D.inboxMaxTotalBytes / 1024 ** 2,
};

/** How the README's flag table writes a default. */
function readmeDefault(value: number | string | boolean): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'string') return `\`${value}\``;
  return String(value);
}

/** The rows of the markdown table that follows `marker` in the README, as trimmed cells (header row dropped). */
function tableAfter(marker: string): string[][] {
  const start = README.indexOf(marker);
  expect(start, `README has "${marker}"`).toBeGreaterThanOrEqual(0);
  const lines = README.slice(start).split('\n').slice(1);
  const first = lines.findIndex((l) => l.startsWith('|'));
  const table: string[] = [];
  for (const line of lines.slice(first)) {
    if (!line.startsWith('|')) break;
    table.push(line);
  }
  return table
    .slice(2) // header and its --- separator
    .map((line) =>
      line
        .slice(1, -1)
        .split('|')
        .map((cell) => cell.trim()),
    );
}

/** Every quantity a README cell mentions, in bytes, milliseconds or plain counts ("1 000", "16 KiB", "15 min"). */
function quantities(cell: string): number[] {
  const unit: Record<string, number> = {
    KiB: 1024,
    MiB: 1024 ** 2,
    GiB: 1024 ** 3,
    ms: 1,
    s: 1000,
    min: 60_000,
  };
  unit.minutes = unit.min!;
  const found: number[] = [];
  for (const m of cell.matchAll(/(\d{1,3}(?: \d{3})+|\d+)\s*(KiB|MiB|GiB|ms|minutes|min|s)?(?![\w])/g))
    found.push(Number(m[1]!.replace(/ /g, '')) * (m[2] ? unit[m[2]]! : 1));
  return found;
}

describe('RELAY_DEFAULTS', () => {
  it("is what `ggrok relay`'s flags default to", () => {
    const options = relayCommand().options.filter((o) => o.long !== '--help');
    for (const option of options) {
      const flag = option.long!;
      if (option.defaultValue === undefined) expect(FLAG_DEFAULTS[flag], flag).toBeUndefined();
      else expect(option.defaultValue, flag).toBe(FLAG_DEFAULTS[flag]);
    }
    expect(Object.keys(FLAG_DEFAULTS).filter((f) => !options.some((o) => o.long === f))).toEqual([]);
  });

  it("is what the README's `ggrok relay` flag table says, and the table lists every flag and its variable", () => {
    const rows = tableAfter('`ggrok relay [options]`');
    const documented = new Map<string, { env: string; default: string }>();
    for (const [flags = '', env = '', def = ''] of rows) {
      const longs = [...flags.matchAll(/--[a-z][\w-]*/g)].map((m) => m[0]);
      const envs = [...env.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]!);
      expect(envs.length, flags).toBe(longs.length);
      longs.forEach((flag, i) => documented.set(flag, { env: envs[i]!, default: def }));
    }
    const options = relayCommand().options.filter((o) => o.long !== '--help');
    expect([...documented.keys()].sort()).toEqual(options.map((o) => o.long!).sort());
    for (const option of options) expect(documented.get(option.long!)?.env, option.long).toBe(option.envVar);
    for (const [flag, value] of Object.entries(FLAG_DEFAULTS))
      expect(documented.get(flag)?.default, flag).toBe(readmeDefault(value));
  });

  it('is what the README says of shutdown and webhooks', () => {
    const deadline = /let in-flight requests finish \((\d+) s\)/.exec(README)?.[1];
    expect(Number(deadline)).toBe(D.closeDeadlineMs / 1000);
    const hooks = /\((\d+) s timeout, (\d+) at a time, no retries\); beyond ([\d ]+) pending/.exec(README);
    expect(hooks?.slice(1).map((n) => Number(n.replace(/ /g, '')))).toEqual([
      D.webhookTimeoutMs / 1000,
      D.webhookConcurrency,
      D.webhookMaxPending,
    ]);
  });

  it("is what the README's limits tables say", () => {
    const security: Record<string, number[]> = {
      'request head size': [D.maxHeaderBytes],
      'slow request heads': [D.headersTimeoutMs],
      'concurrent requests per tunnel': [D.maxRequestsPerTunnel],
      'concurrent channels per tunnel': [D.maxChannelsPerTunnel],
      'new requests per second per tunnel': [D.streamsPerSecond],
      'new requests per second per visitor': [D.visitorStreamsPerSecond],
      'one visitor address in a busy tunnel': [FAIR_SHARE_MAX * 100, FAIR_SHARE_FROM * 100],
      'tunnels per token': [D.maxTunnelsPerToken],
      'idle request or channel': [D.idleStreamMs],
      'control message size': [WIRE_LIMITS.MAX_MESSAGE_BYTES],
      'hello after connecting': [D.handshakeTimeoutMs],
      'wrong secrets per address': [AUTH_FAILURE_BURST, AUTH_FAILURE_REFILL_MS],
      'unsent control frames (peer not reading)': [MAX_CONTROL_BACKLOG_BYTES],
      'silent control socket': [D.deadAfterMs],
      'webhook inbox body': [D.inboxMaxBodyBytes],
      'webhook inbox per tunnel': [D.inboxMaxRequests, D.inboxMaxTunnelBytes],
      'webhook inboxes of the relay': [D.inboxMaxTotalBytes],
    };
    const limits: Record<string, number[]> = {
      'control message (ws `maxPayload`)': [WIRE_LIMITS.MAX_MESSAGE_BYTES],
      'per-stream window / per-connection window': [D.flow.streamWindow, D.flow.connWindow],
      'concurrent requests / channels per tunnel': [D.maxRequestsPerTunnel, D.maxChannelsPerTunnel],
      'public request headers': [D.maxHeaderBytes],
      heartbeats: [D.heartbeatMs, D.deadAfterMs],
      handshake: [D.handshakeTimeoutMs],
      'relay `requestTimeout` / `headersTimeout` / `keepAliveTimeout`': [
        D.headersTimeoutMs,
        D.keepAliveTimeoutMs,
      ],
      'name kept for its token after a disconnect': [D.nameGraceMs],
    };
    for (const [marker, expected] of [
      ['Every limit, its default and how to change it:', security],
      ['## Limits and timeouts', limits],
    ] as const) {
      const rows = new Map(tableAfter(marker).map(([label = '', value = '']) => [label, value]));
      for (const [label, values] of Object.entries(expected)) {
        expect(rows.has(label), `README row "${label}"`).toBe(true);
        expect(quantities(rows.get(label)!), label).toEqual(expect.arrayContaining(values));
      }
    }
  });

  it('is what `ggrok relay --help` shows', async () => {
    const p = runCli(cleanup, ['relay', '--help']);
    expect(await p.exited).toBe(0);
    // One entry per option (descriptions wrap onto indented lines), whitespace collapsed.
    const entries = p
      .stdout()
      .split(/\n(?= {2}-)/)
      .map((e) => e.replace(/\s+/g, ' ').trim());
    for (const [flag, value] of Object.entries(FLAG_DEFAULTS)) {
      const entry = entries.find((e) => new RegExp(`^(-\\w, )?${flag} `).test(e));
      expect(entry, flag).toContain(`default: ${JSON.stringify(value)}`);
    }
  });
});

describe('resolveRelayOptions', () => {
  it('fills in every default, and keeps what was given', () => {
    const o = resolveRelayOptions({ tokens: ['t'], domain: '.Example.TEST.', waitForClientMs: 0 });
    expect(o).toMatchObject({
      domain: 'example.test',
      waitForClientMs: 0,
      heartbeatMs: D.heartbeatMs,
      flow: DEFAULT_FLOW,
      maxRequestsPerTunnel: D.maxRequestsPerTunnel,
      statsIntervalMs: D.statsIntervalMs,
    });
    // An option given as undefined is an option not given.
    expect(resolveRelayOptions({ tokens: ['t'], startupGraceMs: undefined }).startupGraceMs).toBe(
      D.startupGraceMs,
    );
  });

  it('refuses no token, bad flow settings and a webhook that is not http(s)', () => {
    expect(() => resolveRelayOptions({ tokens: [] })).toThrow(/at least one token/);
    const flow = { ...DEFAULT_FLOW, streamWindow: 64 * 1024 };
    expect(() => createRelay({ tokens: ['t'], flow })).toThrow(/flow.streamWindow must be at least 128 KiB/);
    expect(() => createRelay({ tokens: ['t'], webhook: { url: 'ftp://x' } })).toThrow(
      /http:\/\/ or https:\/\//,
    );
    expect(() => createRelay({ tokens: ['t'], webhook: { url: 'not a url' } })).toThrow(/webhook URL/);
  });
});

describe('flowProblem', () => {
  const flags = { streamWindow: '--stream-window', connWindow: '--conn-window', maxData: 'the Data size' };

  it('accepts the defaults and what a peer may announce', () => {
    expect(flowProblem(DEFAULT_FLOW)).toBeUndefined();
    expect(flowProblem({ streamWindow: 1024, connWindow: 1024, maxData: 1024 })).toBeUndefined();
    expect(flowProblem({ ...DEFAULT_FLOW, connWindow: WIRE_LIMITS.MAX_WINDOW_BYTES })).toBeUndefined();
  });

  it("says what is wrong in the caller's words", () => {
    expect(flowProblem({ ...DEFAULT_FLOW, streamWindow: 64 * 1024 }, flags)).toBe(
      '--stream-window must be at least 128 KiB',
    );
    expect(flowProblem({ ...DEFAULT_FLOW, streamWindow: 512 * 1024, connWindow: 256 * 1024 }, flags)).toBe(
      '--conn-window must be at least --stream-window',
    );
    expect(flowProblem({ ...DEFAULT_FLOW, connWindow: 2 * 1024 ** 3 }, flags)).toMatch(
      /--conn-window is too large/,
    );
    expect(flowProblem({ ...DEFAULT_FLOW, maxData: 512 })).toMatch(/flow.maxData must be 1 KiB to 128 KiB/);
    expect(flowProblem({ ...DEFAULT_FLOW, maxData: 256 * 1024 })).toMatch(/flow.maxData/);
    expect(flowProblem({ ...DEFAULT_FLOW, streamWindow: 1.5 * 1024 * 1024 + 0.5 })).toMatch(/whole number/);
  });
});
