// The inspector page's script: the live list, the details pane, replay and edit, curl. Compiled for the browser by
// tsconfig.page.json and inlined under the page's CSP nonce; it builds the DOM with textContent only, never HTML.
// A classic script (no import or export at run time), so everything lives in this function's scope.

type ExchangeSummary = import('../api.js').ExchangeSummary;
type ExchangeDetails = import('../api.js').ExchangeDetails;
type BodyView = import('../api.js').BodyView;
type HeaderPairs = import('../api.js').HeaderPairs;
type ReplayEdits = import('../api.js').ReplayEdits;
type SseEventView = import('../api.js').SseEventView;
type TunnelView = import('../api.js').TunnelView;
type HintView = import('../api.js').HintView;
type WsMessageView = import('../api.js').WsMessageView;

/** Attribute values for el(); undefined, null and false leave the attribute out. */
type AttrValue = string | number | boolean | null | undefined | ((ev: MouseEvent) => void);
type Child = Node | string | null | undefined | false;

(() => {
  /** Milliseconds the details pane waits before re-fetching an exchange that changed (updates come in bursts). */
  const REFRESH_DELAY_MS = 300;
  /** How often the header's tunnel line (with the relay's counters) is refreshed. */
  const TUNNELS_INTERVAL_MS = 5000;
  /** Bytes shown of a binary body's hex dump, and of a binary WebSocket message. */
  const HEXDUMP_BYTES = 1024;
  const MESSAGE_HEX_BYTES = 64;

  function byId<T extends HTMLElement>(id: string): T {
    const node = document.getElementById(id);
    if (!node) throw new Error(`the page has no #${id}`);
    return node as T;
  }

  const rowsEl = byId<HTMLTableSectionElement>('rows');
  const detailEl = byId('detail');
  const connEl = byId('conn');
  const filterEl = byId<HTMLInputElement>('filter');
  const summaries = new Map<number, ExchangeSummary>();
  const rowEls = new Map<number, HTMLTableRowElement>();
  let selected: number | null = null;
  let refreshTimer: ReturnType<typeof setTimeout> | null = null;
  let editing = false;
  /** The curl command shown for an exchange; kept across re-renders of its details (they follow every update). */
  let shownCurl: { id: number; text: string } | null = null;

  function el<K extends keyof HTMLElementTagNameMap>(
    tag: K,
    attrs?: Record<string, AttrValue> | null,
    ...children: Child[]
  ): HTMLElementTagNameMap[K] {
    const node = document.createElement(tag);
    const element: HTMLElement = node;
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (typeof v === 'function') {
          if (k === 'onclick') element.addEventListener('click', v);
          continue;
        }
        if (k === 'text') node.textContent = String(v);
        else if (k === 'className') node.className = String(v);
        else if (k === 'testid') node.setAttribute('data-testid', String(v));
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function clearNode(node: Node): void {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fmtBytes(n: number): string {
    if (n < 1024) return `${n} B`;
    if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
    if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
    return `${(n / 1073741824).toFixed(1)} GiB`;
  }

  function fmtMs(ms: number | undefined): string {
    if (ms === undefined) return '';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  function fmtTime(t: number): string {
    return new Date(t).toLocaleTimeString([], { hour12: false });
  }

  function statusText(s: ExchangeSummary): string {
    if (s.status === undefined || s.status === null) return s.done ? 'ERR' : '\u2026';
    if (s.status === 0) return 'ERR';
    return String(s.status);
  }

  function statusClass(s: ExchangeSummary): string {
    if (s.status === undefined || s.status === null) return s.done ? 'serr' : 'spending';
    if (s.status === 0) return 'serr';
    return `s${String(s.status).charAt(0)}`;
  }

  function sizeText(s: ExchangeSummary): string {
    if (s.upgrade && s.messages !== undefined) return `${s.messages} msgs`;
    if (s.events !== undefined) return `${s.events} events`;
    return fmtBytes(s.responseSize || 0);
  }

  function matches(s: ExchangeSummary): boolean {
    const f = filterEl.value.trim().toLowerCase();
    if (!f) return true;
    return `${s.method} ${s.target} ${statusText(s)} ${s.tunnel || ''}`.toLowerCase().includes(f);
  }

  function renderRow(s: ExchangeSummary): void {
    let row = rowEls.get(s.id);
    if (!row) {
      const id = s.id;
      row = el('tr', { className: 'row', testid: 'exchange-row', 'data-id': id });
      row.addEventListener('click', () => select(id));
      rowEls.set(id, row);
      // Newest first: before the first row with a smaller id.
      let before: Element | null = null;
      for (const other of Array.from(rowsEl.children)) {
        if (Number(other.getAttribute('data-id')) < id) {
          before = other;
          break;
        }
      }
      rowsEl.insertBefore(row, before);
    }
    clearNode(row);
    const path = el('td', { className: 'c-path', testid: 'row-path', title: s.target }, s.target);
    if (s.replayOf !== undefined) path.appendChild(el('span', { className: 'tag', text: 'replay' }));
    if (s.inbox !== undefined)
      path.appendChild(
        el('span', {
          className: 'tag',
          testid: 'row-inbox',
          text: 'inbox',
          title: `kept by the relay while you were away (${s.inbox})${
            s.receivedAt !== undefined ? `, received ${new Date(s.receivedAt).toLocaleString()}` : ''
          }`,
        }),
      );
    if (s.upgrade)
      path.appendChild(el('span', { className: 'tag', text: s.messages !== undefined ? 'ws' : 'upgrade' }));
    if (s.events !== undefined) path.appendChild(el('span', { className: 'tag', text: 'sse' }));
    row.appendChild(el('td', { className: 'c-method', testid: 'row-method' }, s.method));
    row.appendChild(path);
    row.appendChild(
      el(
        'td',
        { className: `c-status ${statusClass(s)}`, testid: 'row-status', title: s.error || s.reason || '' },
        statusText(s),
      ),
    );
    row.appendChild(el('td', { className: 'c-dur', testid: 'row-duration' }, fmtMs(s.durationMs)));
    row.appendChild(el('td', { className: 'c-size', testid: 'row-size' }, sizeText(s)));
    row.appendChild(el('td', { className: 'c-time' }, fmtTime(s.startedAt)));
    row.classList.toggle('selected', s.id === selected);
    row.classList.toggle('hidden', !matches(s));
  }

  function upsert(s: ExchangeSummary): void {
    const old = summaries.get(s.id);
    if (old && old.rev > s.rev) return;
    summaries.set(s.id, s);
    renderRow(s);
    if (s.id === selected) scheduleRefresh();
  }

  function removeIds(ids: number[]): void {
    for (const id of ids) {
      summaries.delete(id);
      rowEls.get(id)?.remove();
      rowEls.delete(id);
      if (id === selected) {
        selected = null;
        showEmpty('That exchange was evicted (the inspector keeps the most recent ones).');
      }
    }
  }

  function showEmpty(text: string): void {
    clearNode(detailEl);
    detailEl.appendChild(el('div', { id: 'empty' }, text));
  }

  /** Fetches an API path: JSON or text, and an Error with the server's message for anything but 2xx. */
  async function api(path: string, options?: RequestInit): Promise<unknown> {
    const res = await fetch(path, options);
    const type = res.headers.get('content-type') || '';
    const data: unknown = type.startsWith('application/json') ? await res.json() : await res.text();
    if (!res.ok) {
      const message = (data as { error?: unknown } | null)?.error;
      throw new Error(typeof message === 'string' && message ? message : `HTTP ${res.status}`);
    }
    return data;
  }

  async function loadList(): Promise<void> {
    const data = (await api('/api/exchanges')) as { exchanges: ExchangeSummary[] };
    const seen = new Set<number>();
    for (const s of data.exchanges) {
      seen.add(s.id);
      upsert(s);
    }
    removeIds(Array.from(summaries.keys()).filter((id) => !seen.has(id)));
  }

  function describeTunnel(x: TunnelView): string {
    const host = x.target.host.includes(':') ? `[${x.target.host}]` : x.target.host;
    const target = `${x.target.protocol}//${host}:${x.target.port}`;
    const t = x.traffic;
    const traffic = t
      ? ` \u00b7 ${t.requests} req, ${fmtBytes(t.bytesIn)} in, ${fmtBytes(t.bytesOut)} out` +
        (t.channels ? `, ${t.channels} channels` : '')
      : '';
    return `${x.url} \u2192 ${target}${traffic}`;
  }

  function loadTunnels(): void {
    api('/api/tunnels').then(
      (data) => {
        const { tunnels: list, hints } = data as { tunnels: TunnelView[]; hints?: HintView[] };
        byId('tunnels').textContent = list.map(describeTunnel).join('   ') || 'no tunnel online yet';
        renderHints(hints ?? []);
      },
      () => {},
    );
  }

  /** A dev server's host-check refusal, explained by the client (once per tunnel): why, and the fixes. */
  function renderHints(hints: HintView[]): void {
    const box = byId('hints');
    box.textContent = '';
    box.classList.toggle('hidden', hints.length === 0);
    for (const h of hints) {
      box.appendChild(
        el(
          'div',
          { testid: 'hint' },
          el('strong', null, `${h.serverName} refused ${h.host}`),
          ` (${h.method} ${h.target} ${h.status}, tunnel ${h.tunnel}): ${h.why}`,
        ),
      );
      const list = el('ul');
      for (const fix of h.fixes) list.appendChild(el('li', null, el('code', null, fix)));
      box.appendChild(list);
      if (h.note) box.appendChild(el('div', { className: 'note' }, `Note: ${h.note}`));
    }
  }

  function select(id: number): void {
    selected = id;
    editing = false;
    rowEls.forEach((row, rid) => row.classList.toggle('selected', rid === id));
    refresh();
  }

  function scheduleRefresh(): void {
    if (refreshTimer || editing) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refresh();
    }, REFRESH_DELAY_MS);
  }

  function refresh(): void {
    const id = selected;
    if (id === null) return;
    api(`/api/exchanges/${id}`).then(
      (d) => {
        if (id !== selected || editing) return;
        renderDetail(d as ExchangeDetails);
      },
      (err: Error) => {
        if (id === selected) showEmpty(err.message);
      },
    );
  }

  function kvTable(pairs: HeaderPairs | undefined, testid: string): HTMLTableElement {
    const t = el('table', { className: 'kv', testid });
    if (!pairs || pairs.length === 0) t.appendChild(el('tr', null, el('td', { text: '(none)' }), el('td')));
    for (const [name, value] of pairs ?? [])
      t.appendChild(el('tr', { testid: 'header' }, el('td', { text: name }), el('td', { text: value })));
    return t;
  }

  function hex2(c: number): string {
    return (c < 16 ? '0' : '') + c.toString(16);
  }

  function hexdump(base64: string, max: number): string {
    const bin = atob(base64);
    const n = Math.min(bin.length, max);
    const lines: string[] = [];
    for (let off = 0; off < n; off += 16) {
      const hex: string[] = [];
      let asc = '';
      for (let i = off; i < Math.min(off + 16, n); i++) {
        const c = bin.charCodeAt(i);
        hex.push(hex2(c));
        asc += c >= 32 && c < 127 ? bin.charAt(i) : '.';
      }
      lines.push(
        `${`0000000${off.toString(16)}`.slice(-8)}  ${hex.join(' ').padEnd(48).slice(0, 48)} ${asc}`,
      );
    }
    if (bin.length > n) lines.push(`\u2026 ${bin.length - n} more bytes`);
    return lines.join('\n');
  }

  function compactHex(base64: string, max: number): string {
    const bin = atob(base64);
    const out: string[] = [];
    for (let i = 0; i < Math.min(bin.length, max); i++) out.push(hex2(bin.charCodeAt(i)));
    return out.join(' ') + (bin.length > max ? ' \u2026' : '');
  }

  function bodyView(b: BodyView, testid: string): HTMLDivElement {
    const box = el('div', { testid, 'data-kind': b.kind });
    const meta = [b.kind === 'json' ? 'JSON' : b.kind, fmtBytes(b.size)];
    if (b.contentType) meta.push(b.contentType);
    if (b.decoded) meta.push(`decoded from ${b.contentEncoding} (${fmtBytes(b.decodedSize || 0)})`);
    else if (b.contentEncoding) meta.push(`${b.contentEncoding}-encoded`);
    if (b.truncated) meta.push(`truncated: first ${fmtBytes(b.captured)} kept`);
    box.appendChild(el('div', { className: 'bodymeta', testid: `${testid}-meta` }, meta.join(' \u00b7 ')));
    if (b.kind === 'empty') return box;
    if (b.text !== undefined) box.appendChild(el('pre', { testid: `${testid}-text` }, b.text));
    else if (b.base64 !== undefined) {
      box.appendChild(el('div', { testid: `${testid}-summary` }, b.summary || 'binary'));
      box.appendChild(el('pre', { testid: `${testid}-hex` }, hexdump(b.base64, HEXDUMP_BYTES)));
    }
    return box;
  }

  function messageData(m: WsMessageView): string {
    let data = m.text ?? (m.base64 !== undefined ? compactHex(m.base64, MESSAGE_HEX_BYTES) : '');
    if (m.type === 'close')
      data = `code ${m.closeCode === undefined ? '(none)' : m.closeCode}${m.text ? ` ${m.text}` : ''}`;
    if (m.note) data = m.note;
    if (m.truncated && !m.note) data += ' \u2026 (truncated)';
    return data;
  }

  function messagesTable(ws: NonNullable<ExchangeDetails['websocket']>, startedAt: number): HTMLDivElement {
    const wrap = el('div');
    const info = [`${ws.total} messages`, `${fmtBytes(ws.bytesIn)} in`, `${fmtBytes(ws.bytesOut)} out`];
    if (ws.deflate) info.push('permessage-deflate');
    if (ws.total > ws.messages.length) info.push(`showing the last ${ws.messages.length}`);
    wrap.appendChild(el('div', { className: 'note' }, info.join(' \u00b7 ')));
    if (ws.error) wrap.appendChild(el('div', { className: 'error', testid: 'ws-error' }, ws.error));
    const t = el(
      'table',
      { className: 'msgs', testid: 'ws-messages' },
      el(
        'tr',
        null,
        el('th', { text: '+ms' }),
        el('th', { text: 'Direction' }),
        el('th', { text: 'Type' }),
        el('th', { text: 'Size' }),
        el('th', { text: 'Data' }),
      ),
    );
    for (const m of ws.messages)
      t.appendChild(
        el(
          'tr',
          { testid: 'ws-message', 'data-direction': m.direction, 'data-type': m.type },
          el('td', { text: String(m.at - startedAt) }),
          el('td', {
            className: `dir-${m.direction}`,
            text: m.direction === 'in' ? 'client \u2192 local' : 'local \u2192 client',
          }),
          el('td', { text: m.type + (m.compressed ? ' (deflate)' : '') }),
          el('td', { text: fmtBytes(m.size) }),
          el('td', { className: 'data', text: messageData(m) }),
        ),
      );
    wrap.appendChild(t);
    return wrap;
  }

  function eventsTable(sse: { total: number; events: SseEventView[] }, startedAt: number): HTMLDivElement {
    const wrap = el('div');
    const shown = sse.total > sse.events.length ? ` \u00b7 showing the last ${sse.events.length}` : '';
    wrap.appendChild(el('div', { className: 'note' }, `${sse.total} events${shown}`));
    const t = el(
      'table',
      { className: 'msgs', testid: 'sse-events' },
      el(
        'tr',
        null,
        el('th', { text: '+ms' }),
        el('th', { text: 'Event' }),
        el('th', { text: 'Id' }),
        el('th', { text: 'Data' }),
      ),
    );
    for (const e of sse.events)
      t.appendChild(
        el(
          'tr',
          { testid: 'sse-event' },
          el('td', { text: String(e.at - startedAt) }),
          el('td', { text: e.event || 'message' }),
          el('td', { text: e.id || '' }),
          el('td', { className: 'data', text: e.data + (e.truncated ? ' \u2026 (truncated)' : '') }),
        ),
      );
    wrap.appendChild(t);
    return wrap;
  }

  function renderDetail(d: ExchangeDetails): void {
    clearNode(detailEl);
    const status = d.response
      ? `${d.response.status} ${d.response.reason}`
      : d.done
        ? d.status
          ? String(d.status)
          : 'no response'
        : 'waiting for the response\u2026';
    detailEl.appendChild(el('h2', { testid: 'detail-title' }, `${d.method} ${d.url}`));
    const meta = el(
      'div',
      { className: 'meta', testid: 'detail-meta' },
      el('span', { className: statusClass(d), testid: 'detail-status' }, status),
      ` \u00b7 ${d.durationMs !== undefined ? fmtMs(d.durationMs) : 'in progress'}` +
        ` \u00b7 ${new Date(d.startedAt).toLocaleString()} \u00b7 tunnel ${d.tunnel || '?'} \u00b7 #${d.id}`,
    );
    const replayOf = d.replayOf;
    if (replayOf !== undefined) {
      meta.appendChild(document.createTextNode(' \u00b7 replay of '));
      meta.appendChild(el('a', { onclick: () => select(replayOf) }, `#${replayOf}`));
    }
    detailEl.appendChild(meta);
    if (d.error) detailEl.appendChild(el('div', { className: 'error', testid: 'detail-error' }, d.error));

    const actions = el('div', { className: 'actions' });
    const replayBtn = el(
      'button',
      { type: 'button', className: 'primary', testid: 'replay', disabled: d.upgrade },
      'Replay',
    );
    replayBtn.addEventListener('click', () => replay(d.id, {}));
    const editBtn = el(
      'button',
      { type: 'button', testid: 'edit-replay', disabled: d.upgrade },
      'Edit & Replay',
    );
    editBtn.addEventListener('click', () => showEdit(d));
    const curlBtn = el('button', { type: 'button', testid: 'copy-curl' }, 'Copy as curl');
    curlBtn.addEventListener('click', () => copyCurl(d.id));
    actions.appendChild(replayBtn);
    actions.appendChild(editBtn);
    actions.appendChild(curlBtn);
    actions.appendChild(el('span', { className: 'note', id: 'action-note', testid: 'action-note' }));
    detailEl.appendChild(actions);
    detailEl.appendChild(el('div', { id: 'edit-slot' }));
    detailEl.appendChild(el('div', { id: 'curl-slot' }));
    showCurl();

    detailEl.appendChild(el('h3', null, 'Request headers'));
    detailEl.appendChild(kvTable(d.request.headers, 'request-headers'));
    detailEl.appendChild(el('h3', null, 'Request body'));
    detailEl.appendChild(bodyView(d.request.body, 'request-body'));
    if (d.response) {
      detailEl.appendChild(el('h3', null, 'Response headers'));
      detailEl.appendChild(kvTable(d.response.headers, 'response-headers'));
      if (!d.upgrade || d.response.status !== 101) {
        detailEl.appendChild(el('h3', null, 'Response body'));
        detailEl.appendChild(bodyView(d.response.body, 'response-body'));
      }
    }
    if (d.websocket) {
      const title =
        d.websocket.protocol === 'websocket' || d.websocket.messages.length
          ? 'WebSocket messages'
          : 'Channel';
      detailEl.appendChild(el('h3', null, title));
      detailEl.appendChild(messagesTable(d.websocket, d.startedAt));
    }
    if (d.sse) {
      detailEl.appendChild(el('h3', null, 'Server-sent events'));
      detailEl.appendChild(eventsTable(d.sse, d.startedAt));
    }
  }

  function note(text: string, isError = false): void {
    const n = document.getElementById('action-note');
    if (!n) return;
    n.textContent = text;
    n.className = isError ? 'note serr' : 'note';
  }

  function replay(id: number, edits: ReplayEdits): void {
    note('replaying\u2026');
    api(`/api/exchanges/${id}/replay`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(edits),
    }).then(
      (r) => {
        editing = false;
        select((r as { id: number }).id);
      },
      (err: Error) => note(`replay failed: ${err.message}`, true),
    );
  }

  function showEdit(d: ExchangeDetails): void {
    editing = true;
    const slot = byId('edit-slot');
    clearNode(slot);
    const form = el('form', { className: 'edit', testid: 'edit-form' });
    const method = el('input', {
      type: 'text',
      testid: 'edit-method',
      value: d.method,
      'aria-label': 'Method',
    });
    const target = el('input', {
      type: 'text',
      testid: 'edit-target',
      value: d.target,
      'aria-label': 'Path',
    });
    const headers = el('textarea', { testid: 'edit-headers', 'aria-label': 'Headers', spellcheck: 'false' });
    headers.value = d.request.headers
      .filter(([name]) => !['content-length', 'transfer-encoding'].includes(name.toLowerCase()))
      .map(([name, value]) => `${name}: ${value}`)
      .join('\n');
    const body = el('textarea', { testid: 'edit-body', 'aria-label': 'Body', spellcheck: 'false' });
    const b = d.request.body;
    const binary = b.kind === 'binary';
    if (binary) {
      body.disabled = true;
      body.placeholder = `binary body (${fmtBytes(b.size)}) is sent as it was`;
    } else {
      body.value = b.decoded ? '' : b.text || '';
    }
    const hint = b.truncated
      ? el(
          'div',
          { className: 'note' },
          `The captured body was cut at ${fmtBytes(b.captured)} of ${fmtBytes(b.size)}; what is in the box is what will be sent.`,
        )
      : null;
    const send = el('button', { type: 'submit', className: 'primary', testid: 'edit-send' }, 'Send');
    const cancel = el('button', { type: 'button', testid: 'edit-cancel' }, 'Cancel');
    cancel.addEventListener('click', () => {
      editing = false;
      refresh();
    });
    form.appendChild(el('label', null, 'Method'));
    form.appendChild(method);
    form.appendChild(el('label', null, 'Path'));
    form.appendChild(target);
    form.appendChild(el('label', null, 'Headers'));
    form.appendChild(headers);
    form.appendChild(el('label', null, 'Body'));
    form.appendChild(el('div', null, body, hint));
    form.appendChild(el('div', { className: 'buttons' }, send, cancel));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const pairs: HeaderPairs = [];
      const lines = headers.value.split(/\r?\n/);
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!;
        if (!line.trim()) continue;
        const colon = line.indexOf(':');
        if (colon <= 0) return note(`header line ${i + 1} needs "Name: value"`, true);
        pairs.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
      }
      const edits: ReplayEdits = { method: method.value.trim(), target: target.value.trim(), headers: pairs };
      if (!binary && !b.decoded) edits.body = body.value;
      replay(d.id, edits);
    });
    slot.appendChild(form);
    method.focus();
  }

  function showCurl(): void {
    const slot = document.getElementById('curl-slot');
    if (!slot || !shownCurl || shownCurl.id !== selected) return;
    clearNode(slot);
    slot.appendChild(el('pre', { testid: 'curl-output' }, shownCurl.text));
  }

  function copyCurl(id: number): void {
    api(`/api/exchanges/${id}/curl`).then(
      (data) => {
        const text = data as string;
        shownCurl = { id, text };
        showCurl();
        const done = (): void => note('curl command copied');
        const fail = (): void => note('select the command above and copy it');
        // navigator.clipboard is missing outside secure contexts (e.g. the inspector opened by a LAN address).
        const clipboard = navigator.clipboard as Clipboard | undefined;
        if (clipboard?.writeText) clipboard.writeText(text).then(done, fail);
        else fail();
      },
      (err: Error) => note(err.message, true),
    );
  }

  filterEl.addEventListener('input', () => {
    summaries.forEach((s) => rowEls.get(s.id)?.classList.toggle('hidden', !matches(s)));
  });
  byId('clear').addEventListener('click', () => {
    api('/api/clear', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' }).catch(
      () => {},
    );
  });
  document.addEventListener('keydown', (ev) => {
    const from = ev.target as HTMLElement | null;
    if (from && (from.tagName === 'INPUT' || from.tagName === 'TEXTAREA')) return;
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    const visible = Array.from(rowsEl.children).filter((r) => !r.classList.contains('hidden'));
    if (visible.length === 0) return;
    const at = visible.findIndex((r) => Number(r.getAttribute('data-id')) === selected);
    const next = visible[Math.max(0, Math.min(visible.length - 1, at + (ev.key === 'ArrowDown' ? 1 : -1)))]!;
    ev.preventDefault();
    select(Number(next.getAttribute('data-id')));
    next.scrollIntoView({ block: 'nearest' });
  });

  function connect(): void {
    const es = new EventSource('/api/events');
    es.addEventListener('open', () => {
      connEl.textContent = 'live';
      connEl.className = 'live';
      loadList().catch(() => {});
      loadTunnels();
    });
    es.addEventListener('exchange', (e) => {
      const summary = JSON.parse(e.data as string) as ExchangeSummary;
      upsert(summary);
      // A finished 400 or 403 may have brought a host-check hint: show it now rather than at the next poll.
      if (summary.done && (summary.status === 400 || summary.status === 403)) loadTunnels();
    });
    es.addEventListener('evict', (e) => removeIds(JSON.parse(e.data as string) as number[]));
    es.addEventListener('clear', () => {
      removeIds(Array.from(summaries.keys()));
      showEmpty('Cleared.');
    });
    es.addEventListener('error', () => {
      connEl.textContent = 'reconnecting';
      connEl.className = 'down';
    });
  }

  connect();
  // The relay's counters change as traffic flows: refresh the header now and then.
  setInterval(loadTunnels, TUNNELS_INTERVAL_MS);
})();
