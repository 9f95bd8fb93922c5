// /_ggrok/inbox on the relay's own host: an owner lists, replays and drops its kept requests (`ggrok inbox`).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode } from '../protocol/errors.js';
import type { Inbox, StoredRequest } from './inbox.js';
import { sendJson } from './pages.js';

/** The inbox API's path; `/<id>` names one kept request, `/<id>/replay` queues it again. */
export const INBOX_PATH = '/_ggrok/inbox';

/** How a kept request is listed: its head and bookkeeping, never its body or headers (they may hold secrets). */
export interface InboxEntry {
  id: string;
  name: string;
  method: string;
  target: string;
  receivedAt: string;
  bytes: number;
  attempts: number;
  state: 'queued' | 'failed';
  lastError?: string;
}

function entry(r: StoredRequest): InboxEntry {
  return {
    id: r.id,
    name: r.name,
    method: r.method,
    target: r.target.length > 200 ? `${r.target.slice(0, 199)}…` : r.target,
    receivedAt: new Date(r.receivedAt).toISOString(),
    bytes: r.data.length,
    attempts: r.attempts,
    state: r.state,
    ...(r.lastError !== undefined ? { lastError: r.lastError } : {}),
  };
}

/**
 * Serves the inbox API for `owner` (the token the request presented, already checked): GET lists, POST
 * `<id>/replay` queues a request again with fresh attempts, DELETE `<id>` drops it. Only the owner's own requests
 * are visible: another owner's id is answered as unknown.
 */
export function serveInboxApi(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  owner: string,
  inbox: Inbox,
): void {
  const rest = path.slice(INBOX_PATH.length);
  if (rest === '' || rest === '/') {
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'method_not_allowed' });
    return sendJson(res, 200, { requests: inbox.list(owner).map(entry) });
  }
  const m = /^\/(ib_[A-Za-z0-9_-]{16})(\/replay)?$/.exec(rest);
  const r = m ? inbox.find(owner, m[1]!) : undefined;
  if (!m || !r)
    return sendJson(res, 404, {
      error: ErrorCode.InboxNotFound,
      message: 'no kept request has this id (delivered, dropped or expired)',
    });
  if (m[2] && req.method === 'POST') {
    inbox.replay(r);
    return sendJson(res, 200, entry(r));
  }
  if (!m[2] && req.method === 'DELETE') {
    inbox.remove(r);
    return sendJson(res, 200, { ...entry(r), dropped: true });
  }
  if (!m[2] && req.method === 'GET') return sendJson(res, 200, entry(r));
  sendJson(res, 405, { error: 'method_not_allowed' });
}
