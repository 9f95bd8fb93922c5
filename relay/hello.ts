// The handshake on a control socket: the hello's token, names and limits decide a Welcome (and its tunnels) or a Refuse.
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type WebSocket from 'ws';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import { CloseCode, RefuseCode, type RefuseCodeValue } from '../protocol/errors.js';
import {
  FrameType,
  PROTOCOL_VERSION,
  type Frame,
  type HelloFrame,
  type MemberRef,
  type TunnelRequest,
  type WelcomeFrame,
} from '../protocol/frames.js';
import { Session } from '../protocol/session.js';
import type { Cluster } from './cluster/cluster.js';
import type { MemberInfo } from './cluster/membership.js';
import { AccessPolicy, visitorAddress, type VisitorAddressSource } from './access.js';
import type { SecretThrottle } from './auth-failures.js';
import type { ResolvedRelayOptions } from './options.js';
import { MemberState } from './pool.js';
import { OWN_HOST_NAME, type Registry } from './registry.js';
import type { Router, WaitingRoom } from './routing.js';
import type { Telemetry } from './telemetry.js';
import type { Credentials } from './tokens.js';
import type { Inbox } from './inbox.js';
import { Tunnel } from './tunnel.js';

/** The cluster's members as a client dials them. */
export function memberRefs(members: MemberInfo[]): MemberRef[] {
  return members.map((m) => ({
    id: m.id,
    ...(m.instanceUrl ? { url: m.instanceUrl } : {}),
    ...(m.flyMachine ? { fly: m.flyMachine } : {}),
  }));
}

/** How the relay answers a hello: refuse it, or welcome it and then start the tunnel. */
type HelloDecision =
  { refuse: RefuseCodeValue; message: string } | { welcome: Omit<WelcomeFrame, 'type'>; start: () => void };

/** A refusal: its code, and the message the client shows. */
type Refusal = { refuse: RefuseCodeValue; message: string };

/** How long a turned-away socket gets to complete the close handshake before its TCP connection is dropped. */
const CLOSE_GRACE_MS = 1000;

/**
 * Runs the relay side of the handshake on a freshly upgraded socket: waits for Hello (bounded in time),
 * asks `decide` what to do with it, then answers Welcome and calls `start`, or answers Refuse and closes.
 * Nothing about tunnels happens before `decide` has checked the token.
 */
function acceptControlSocket(
  ws: WebSocket,
  timeoutMs: number,
  decide: (hello: HelloFrame) => Promise<HelloDecision>,
  /** Told about sockets turned away before `decide` saw a hello: `handshake_timeout`, `protocol_error`, … */
  onEarlyRefusal?: (reason: string) => void,
): void {
  const timer = setTimeout(() => {
    onEarlyRefusal?.('handshake_timeout');
    closeNow(ws, CloseCode.HandshakeTimeout, 'no hello in time');
  }, timeoutMs);
  timer.unref();
  ws.on('error', () => {});
  ws.once('close', () => clearTimeout(timer));
  ws.once('message', (data: Buffer, isBinary: boolean) => {
    clearTimeout(timer);
    let frame: Frame | undefined;
    try {
      if (isBinary) frame = decodeFrame(data);
    } catch {
      frame = undefined;
    }
    if (!frame || frame.type !== FrameType.Hello) {
      onEarlyRefusal?.(RefuseCode.ProtocolError);
      return refuse(ws, RefuseCode.ProtocolError, 'expected a hello frame first');
    }
    if (frame.version !== PROTOCOL_VERSION) {
      onEarlyRefusal?.(RefuseCode.UnsupportedVersion);
      return refuse(
        ws,
        RefuseCode.UnsupportedVersion,
        `client speaks protocol v${frame.version}, relay speaks v${PROTOCOL_VERSION}`,
      );
    }
    decide(frame).then(
      (decision) => {
        // The decision may have waited for the cluster store: the client may be gone meanwhile.
        if (ws.readyState !== ws.OPEN) return;
        if ('refuse' in decision) return refuse(ws, decision.refuse, decision.message);
        ws.send(encodeFrame({ type: FrameType.Welcome, ...decision.welcome }));
        decision.start();
      },
      () => refuse(ws, RefuseCode.ProtocolError, 'internal error'),
    );
  });
}

function refuse(ws: WebSocket, code: RefuseCodeValue, message: string): void {
  ws.send(encodeFrame({ type: FrameType.Refuse, code, message }));
  closeNow(ws, CloseCode.Refused, code);
}

/**
 * Says why in a close frame, then drops the connection: a socket turned away must not hold a connection open for
 * ws's 30 s close timeout (a client that never answers the close, or never said hello, is not owed that).
 */
function closeNow(ws: WebSocket, code: number, reason: string): void {
  ws.close(code, reason);
  setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
}

/** One tunnel a hello may open: its name, rules, and whether it takes over from its owner's earlier one. */
interface TunnelPlan {
  name: string;
  access?: AccessPolicy;
  /** Webhook inbox path patterns (empty: off). */
  inbox: readonly string[];
  replaces?: Tunnel;
  /** The name was held for this owner, or this client's own stale tunnel is replaced. */
  reconnect: boolean;
  /** The name's fencing counter (cluster; 0 alone). */
  fence: number;
  /** Joins (or starts) the name's endpoint pool. */
  pool: boolean;
}

/** Random names tried before a hello that asked for none gives up (each may be taken somewhere in the cluster). */
const RANDOM_NAME_ATTEMPTS = 8;

/** What the hello decision reads and tells. */
export interface HelloDeps {
  options: ResolvedRelayOptions;
  registry: Registry<Tunnel>;
  credentials: Credentials;
  throttle: SecretThrottle;
  visitorAddressSource: VisitorAddressSource;
  router: Router;
  waitingRoom: WaitingRoom;
  /** Webhook inboxes: told when tunnels go and come back. */
  inbox: Inbox;
  telemetry: Telemetry;
  /** The cluster this relay is an instance of, if any: names are claimed there. */
  cluster: Cluster | undefined;
  /** True once the relay is shutting down: new tunnels are refused. */
  closing(): boolean;
  /** A session of a cluster-aware client started (it gets Members frames) or ended. */
  clusterSession(session: Session, open: boolean): void;
}

/** Decides each hello, and starts the session and tunnels of those welcomed. */
export class HelloDecider {
  constructor(private readonly deps: HelloDeps) {}

  /** Takes a freshly upgraded control socket (upgraded from `req`) through the handshake. */
  accept(ws: WebSocket, req: IncomingMessage): void {
    acceptControlSocket(
      ws,
      this.deps.options.handshakeTimeoutMs,
      (hello) => this.decide(hello, req, ws),
      (reason) => this.deps.telemetry.refused(reason, { peer: req.socket.remoteAddress }),
    );
  }

  /** Checks the token (behind the failed-secret throttle), every name asked for and the token's tunnel limit. */
  private async decide(hello: HelloFrame, req: IncomingMessage, ws: WebSocket): Promise<HelloDecision> {
    const { options, registry, telemetry } = this.deps;
    const peer = visitorAddress(req, this.deps.visitorAddressSource);
    if (this.deps.closing()) {
      telemetry.refused(RefuseCode.RelayShuttingDown, { peer });
      return { refuse: RefuseCode.RelayShuttingDown, message: 'relay is shutting down' };
    }
    const waitMs = this.deps.throttle.waitMs(peer);
    if (waitMs > 0) {
      telemetry.metrics.refused(RefuseCode.TooManyAttempts);
      return {
        refuse: RefuseCode.TooManyAttempts,
        message: `too many wrong tokens from ${peer}; try again in ${Math.ceil(waitMs / 1000)} s`,
      };
    }
    const token = this.deps.credentials.client(hello.token);
    if (!token) {
      this.deps.throttle.failed('client_token', peer);
      telemetry.refused(RefuseCode.BadToken, { peer });
      return { refuse: RefuseCode.BadToken, message: 'token rejected' };
    }
    const instanceId = options.instanceId;
    if (hello.attach?.avoid.includes(instanceId))
      return { refuse: RefuseCode.WrongInstance, message: `already attached to instance ${instanceId}` };
    const wanted: TunnelRequest[] = [
      { name: hello.name, access: hello.access, pool: hello.pool, inbox: hello.inbox },
      ...(hello.more ?? []),
    ];
    if (!options.domain && wanted.length > 1) {
      telemetry.refused(RefuseCode.NameInUse, { peer, owner: token.label });
      return { refuse: RefuseCode.NameInUse, message: 'this relay serves one tunnel (own-host mode)' };
    }
    const plans: TunnelPlan[] = [];
    for (const tunnel of wanted) {
      const plan = await this.plan(tunnel, token.owner, hello.clientId, plans);
      if ('refuse' in plan) {
        telemetry.refused(plan.refuse, { name: tunnel.name.slice(0, 80), peer, owner: token.label });
        return plan;
      }
      plans.push(plan);
    }
    const replaced = new Set(plans.map((p) => p.replaces).filter((t) => t !== undefined));
    const held = [...registry.values()].filter((t) => t.owner === token.owner && !replaced.has(t)).length;
    if (held + plans.length > options.maxTunnelsPerToken) {
      telemetry.refused(RefuseCode.TooManyTunnels, { peer, owner: token.label });
      return {
        refuse: RefuseCode.TooManyTunnels,
        message: `this token already has ${held} tunnels open and the relay allows ${options.maxTunnelsPerToken}`,
      };
    }
    const urls = plans.map((p) => this.deps.router.tunnelUrl(req, p.name));
    const inbox = this.deps.inbox.notices(
      plans.map((p) => p.name),
      token.owner,
    );
    return {
      welcome: {
        name: plans[0]!.name,
        url: urls[0]!,
        flow: options.flow,
        heartbeatMs: options.heartbeatMs,
        maxStreams: options.maxRequestsPerTunnel + options.maxChannelsPerTunnel,
        more: plans.slice(1).map((p, i) => ({ name: p.name, url: urls[i + 1]! })),
        instance: instanceId,
        ...(this.deps.cluster && hello.attach ? { members: memberRefs(this.deps.cluster.members) } : {}),
        ...(inbox.length > 0 ? { inbox } : {}),
      },
      start: () => {
        // Also a tunnel of the same client registered while this hello waited for the cluster store.
        for (const p of plans)
          for (const current of registry.members(p.name))
            if (current.owner === token.owner && current.clientId === hello.clientId) replaced.add(current);
        for (const old of replaced)
          old.session.close(CloseCode.Replaced, 'replaced by a new connection from the same client');
        this.start(ws, hello, plans, urls, { owner: token.owner, ownerLabel: token.label, peer });
      },
    };
  }

  /** Opens the welcomed client's session and its tunnels, and lets requests waiting for them through. */
  private start(
    ws: WebSocket,
    hello: HelloFrame,
    plans: TunnelPlan[],
    urls: string[],
    who: { owner: string; ownerLabel: string; peer: string },
  ): void {
    const { options, registry, telemetry } = this.deps;
    const session = new Session(ws, {
      role: 'relay',
      localFlow: options.flow,
      remoteFlow: hello.flow,
      heartbeatMs: options.heartbeatMs,
      deadAfterMs: options.deadAfterMs,
      idleStreamMs: options.idleStreamMs,
      onProtocolError: (err, fatal) => telemetry.protocolError(plans[0]!.name, err, fatal),
      onFlowStall: (scope) => telemetry.metrics.flowStall(scope),
      onClose: ({ code, reason }) => {
        if (hello.attach) this.deps.clusterSession(session, false);
        for (const tunnel of tunnels) {
          registry.remove(tunnel.name, tunnel);
          this.deps.inbox.away(tunnel);
          telemetry.tunnelDisconnected(tunnel, code, reason);
          if (tunnel.pool) this.announcePool(tunnel.name);
        }
        this.deps.cluster?.servedChanged();
      },
      // A pool member leaving (its client stops): no new requests go to it; those in flight finish.
      onGoAway: () => {
        for (const tunnel of tunnels)
          if (tunnel.pool) {
            tunnel.health.drain();
            telemetry.log({ event: 'pool_member_draining', name: tunnel.name, member: tunnel.member });
            this.announcePool(tunnel.name);
          }
      },
      onHealth: (frame) => {
        const tunnel = tunnels[frame.tunnel];
        if (!tunnel?.pool) return;
        const before = tunnel.health.state;
        tunnel.health.reported(frame.ok);
        if (tunnel.health.state !== before)
          telemetry.log({
            event: 'pool_member_health',
            name: tunnel.name,
            member: tunnel.member,
            health: tunnel.health.state,
            ...(frame.ok ? {} : { detail: frame.detail.slice(0, 200) }),
          });
      },
    });
    if (hello.attach) this.deps.clusterSession(session, true);
    const rate = { perTunnel: options.streamsPerSecond, perVisitor: options.visitorStreamsPerSecond };
    // The same member id on every instance the client is attached to, and across its reconnects.
    const member = createHash('sha256').update(`${who.owner} ${hello.clientId}`).digest('hex').slice(0, 8);
    const tunnels = plans.map(
      (p, index) =>
        new Tunnel({
          name: p.name,
          url: urls[index]!,
          owner: who.owner,
          ownerLabel: who.ownerLabel,
          clientId: hello.clientId,
          agent: hello.agent,
          session,
          access: p.access,
          rate,
          index,
          fence: p.fence,
          pool: p.pool,
          member,
          host: hello.host ?? '',
          inbox: p.inbox,
        }),
    );
    for (const [index, tunnel] of tunnels.entries()) {
      telemetry.tunnelConnected(tunnel, { peer: who.peer, reconnect: plans[index]!.reconnect });
      registry.add(tunnel.name, tunnel);
      if (tunnel.pool) this.announcePool(tunnel.name);
      this.deps.waitingRoom.release(tunnel);
    }
    // After registry.add: what the inbox kept goes out now, through the live tunnel.
    for (const tunnel of tunnels) this.deps.inbox.back(tunnel);
    this.deps.cluster?.servedChanged();
  }

  /** Tells every member of pool `name` its id and the pool's size (members that are leaving not counted). */
  private announcePool(name: string): void {
    const members = this.deps.registry.members(name);
    const size = members.filter((m) => m.health.state !== MemberState.Draining).length;
    for (const m of members) if (m.pool) m.session.sendPool({ tunnel: m.index, member: m.member, size });
  }

  /** Checks one requested tunnel: its access rules and its name, here and (in a cluster) in the shared store. */
  private async plan(
    wanted: TunnelRequest,
    owner: string,
    clientId: string,
    planned: { name: string }[],
  ): Promise<TunnelPlan | Refusal> {
    for (let attempt = 0; ; attempt++) {
      const plan = this.planHere(wanted, owner, clientId, planned);
      const cluster = this.deps.cluster;
      if ('refuse' in plan || !cluster) return plan;
      const claim = await cluster.claim(plan.name, owner, clientId, plan.pool);
      switch (claim.kind) {
        case 'unavailable':
          return { refuse: RefuseCode.ClusterUnavailable, message: `cannot claim a name now: ${claim.why}` };
        case 'held':
        case 'in_use':
          // A random name someone already has elsewhere: pick another.
          if (!wanted.name && attempt < RANDOM_NAME_ATTEMPTS) continue;
          return {
            refuse: RefuseCode.NameInUse,
            message:
              claim.kind === 'in_use' || cluster.whereIs(plan.name).length > 0
                ? `subdomain "${plan.name}" is in use by another client`
                : `subdomain "${plan.name}" is held for its previous owner`,
          };
        case 'new':
        case 'same':
        case 'takeover':
          return { ...plan, fence: claim.fence, reconnect: plan.reconnect || claim.kind !== 'new' };
      }
    }
  }

  /** The checks this instance can make alone: access rules, the name's form, and its own live tunnels and holds. */
  private planHere(
    wanted: TunnelRequest,
    owner: string,
    clientId: string,
    planned: { name: string }[],
  ): TunnelPlan | Refusal {
    const registry = this.deps.registry;
    let access: AccessPolicy | undefined;
    try {
      access = wanted.access ? new AccessPolicy(wanted.access) : undefined;
    } catch (err) {
      return { refuse: RefuseCode.AccessInvalid, message: (err as Error).message };
    }
    const pool = wanted.pool === true;
    const inbox = wanted.inbox ?? [];
    if (!this.deps.options.domain) {
      const check = registry.check(OWN_HOST_NAME, owner, clientId, pool);
      // A name held for someone else does not stop a new client here: own-host mode has only this one name.
      if (check.problem === 'in_use')
        return {
          refuse: RefuseCode.NameInUse,
          message: 'this relay already serves a tunnel (own-host mode serves one at a time)',
        };
      const reconnect = check.replaces !== undefined || registry.heldFor(OWN_HOST_NAME) === owner;
      return { name: OWN_HOST_NAME, access, inbox, replaces: check.replaces, reconnect, fence: 0, pool };
    }
    let name = wanted.name.toLowerCase();
    while (!name || planned.some((p) => p.name === name && !wanted.name)) name = registry.pickName();
    if (planned.some((p) => p.name === name))
      return { refuse: RefuseCode.NameInUse, message: `subdomain "${name}" is asked for twice` };
    const check = registry.check(name, owner, clientId, pool);
    switch (check.problem) {
      case undefined: {
        const reconnect = check.replaces !== undefined || registry.heldFor(name) === owner;
        return { name, access, inbox, replaces: check.replaces, reconnect, fence: 0, pool };
      }
      case 'invalid':
        return {
          refuse: RefuseCode.NameInvalid,
          message: `"${wanted.name.slice(0, 80)}" is not a valid subdomain`,
        };
      case 'reserved':
        return { refuse: RefuseCode.NameReserved, message: `"${name}" is reserved` };
      case 'in_use':
        return { refuse: RefuseCode.NameInUse, message: `subdomain "${name}" is in use by another client` };
      case 'held':
        return {
          refuse: RefuseCode.NameInUse,
          message: `subdomain "${name}" is held for its previous owner`,
        };
    }
  }
}
