// The inspector's single page: inline HTML, CSS and JS (no build step, no external assets; data only via textContent).

/** The page, with `nonce` allowing its inline script and style under the server's Content-Security-Policy. */
export function inspectorPage(nonce: string): string {
  return PAGE.replaceAll('__NONCE__', nonce);
}

// The script below avoids backticks and dollar-brace so it can live in this template literal untouched.
const PAGE = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ggrok inspector</title>
<link rel="icon" href="data:,">
<style nonce="__NONCE__">
  :root {
    --bg: #fff; --fg: #1d1f23; --muted: #6b7079; --line: #e3e5e8; --panel: #f6f7f9; --sel: #e6efff;
    --ok: #137333; --redirect: #1a5fb4; --client: #b35900; --server: #c5221f; --accent: #1a5fb4;
    --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  }
  @media (prefers-color-scheme: dark) {
    :root {
      --bg: #17191c; --fg: #e4e6ea; --muted: #9aa0a9; --line: #2c3035; --panel: #1f2226; --sel: #23324a;
      --ok: #5cc97b; --redirect: #7aa9ff; --client: #ffab57; --server: #ff7b72; --accent: #7aa9ff;
    }
  }
  * { box-sizing: border-box; }
  html, body { height: 100%; margin: 0; }
  body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
    display: flex; flex-direction: column; }
  header { display: flex; gap: 12px; align-items: center; padding: 8px 12px; border-bottom: 1px solid var(--line);
    background: var(--panel); flex-wrap: wrap; }
  header h1 { font-size: 15px; margin: 0; }
  #tunnels { color: var(--muted); flex: 1; min-width: 200px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  #conn { font-size: 12px; color: var(--muted); }
  #conn.live::before { content: "\25CF "; color: var(--ok); }
  #conn.down::before { content: "\25CF "; color: var(--server); }
  input, textarea, button, select { font: inherit; color: inherit; }
  input[type=search], input[type=text], textarea { background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: 4px 6px; }
  button, a.button { background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: 4px 10px; cursor: pointer;
    text-decoration: none; color: var(--fg); display: inline-block; }
  button:hover, a.button:hover { border-color: var(--accent); }
  button:disabled { opacity: .5; cursor: default; }
  button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
  main { flex: 1; display: grid; grid-template-columns: minmax(320px, 42%) 1fr; min-height: 0; }
  #list { overflow: auto; border-right: 1px solid var(--line); }
  #list table { width: 100%; border-collapse: collapse; table-layout: fixed; }
  #list th { position: sticky; top: 0; background: var(--panel); text-align: left; font-weight: 600; color: var(--muted);
    border-bottom: 1px solid var(--line); padding: 4px 6px; font-size: 12px; }
  #list td { padding: 4px 6px; border-bottom: 1px solid var(--line); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  #list tr.row { cursor: pointer; }
  #list tr.row:hover { background: var(--panel); }
  #list tr.row.selected { background: var(--sel); }
  #list tr.row.hidden { display: none; }
  .c-method { width: 68px; font-weight: 600; }
  .c-status { width: 52px; }
  .c-dur { width: 70px; text-align: right; }
  .c-size { width: 80px; text-align: right; }
  .c-time { width: 72px; color: var(--muted); }
  td.c-path { font-family: var(--mono); font-size: 12px; }
  .s2 { color: var(--ok); } .s3 { color: var(--redirect); } .s4 { color: var(--client); } .s5, .serr { color: var(--server); }
  .s1 { color: var(--accent); } .spending { color: var(--muted); }
  .tag { font-size: 11px; border: 1px solid var(--line); border-radius: 3px; padding: 0 4px; margin-left: 4px; color: var(--muted); }
  #detail { overflow: auto; padding: 12px 16px; min-width: 0; }
  #empty { color: var(--muted); padding: 40px; text-align: center; }
  h2 { font-size: 14px; margin: 0 0 4px; font-family: var(--mono); word-break: break-all; }
  h3 { font-size: 13px; margin: 18px 0 6px; border-bottom: 1px solid var(--line); padding-bottom: 3px; }
  .meta { color: var(--muted); margin-bottom: 8px; }
  .meta a { color: var(--accent); cursor: pointer; }
  .actions { display: flex; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
  .error { color: var(--server); background: var(--panel); border-left: 3px solid var(--server); padding: 6px 8px; margin: 8px 0; }
  table.kv { border-collapse: collapse; width: 100%; font-family: var(--mono); font-size: 12px; }
  table.kv td { border-bottom: 1px solid var(--line); padding: 2px 6px; vertical-align: top; word-break: break-all; }
  table.kv td:first-child { color: var(--muted); white-space: nowrap; width: 1%; word-break: normal; }
  pre { font-family: var(--mono); font-size: 12px; background: var(--panel); border: 1px solid var(--line); border-radius: 4px;
    padding: 8px; margin: 4px 0; overflow: auto; max-height: 480px; white-space: pre-wrap; word-break: break-all; }
  .bodymeta { color: var(--muted); font-size: 12px; }
  table.msgs { border-collapse: collapse; width: 100%; font-size: 12px; }
  table.msgs th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 2px 6px; }
  table.msgs td { border-bottom: 1px solid var(--line); padding: 2px 6px; vertical-align: top; }
  table.msgs td.data { font-family: var(--mono); white-space: pre-wrap; word-break: break-all; }
  .dir-in { color: var(--accent); } .dir-out { color: var(--ok); }
  form.edit { display: grid; grid-template-columns: 90px 1fr; gap: 6px 8px; background: var(--panel); border: 1px solid var(--line);
    padding: 10px; border-radius: 4px; margin: 8px 0; }
  form.edit label { color: var(--muted); padding-top: 4px; }
  form.edit input, form.edit textarea { width: 100%; }
  form.edit textarea { font-family: var(--mono); font-size: 12px; min-height: 90px; resize: vertical; }
  form.edit .buttons { grid-column: 2; display: flex; gap: 8px; }
  .note { color: var(--muted); font-size: 12px; }
  #hints { padding: 6px 12px; border-bottom: 1px solid var(--line); border-left: 3px solid var(--client); background: var(--panel); }
  #hints ul { margin: 2px 0 4px; padding-left: 20px; }
  #hints code { font-family: var(--mono); font-size: 12px; }
  .hidden { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>ggrok inspector</h1>
  <span id="tunnels" data-testid="tunnels"></span>
  <input type="search" id="filter" data-testid="filter" placeholder="Filter (method, path, status)" aria-label="Filter">
  <button type="button" id="clear" data-testid="clear">Clear</button>
  <a class="button" href="/api/har" download="ggrok-session.har" data-testid="download-har">Download HAR</a>
  <span id="conn" data-testid="connection-status">connecting</span>
</header>
<div id="hints" data-testid="hints" class="hidden"></div>
<main>
  <section id="list">
    <table>
      <thead><tr><th class="c-method">Method</th><th>Path</th><th class="c-status">Status</th><th class="c-dur">Time</th><th class="c-size">Size</th><th class="c-time">At</th></tr></thead>
      <tbody id="rows" data-testid="exchange-list"></tbody>
    </table>
  </section>
  <section id="detail" data-testid="detail">
    <div id="empty">Requests through the tunnel appear here as they happen. Select one to see it.</div>
  </section>
</main>
<script nonce="__NONCE__">
'use strict';
(function () {
  var rowsEl = document.getElementById('rows');
  var detailEl = document.getElementById('detail');
  var connEl = document.getElementById('conn');
  var filterEl = document.getElementById('filter');
  var summaries = new Map();
  var rowEls = new Map();
  var selected = null;
  var current = null;
  var refreshTimer = null;
  var editing = false;

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k === 'text') node.textContent = String(v);
        else if (k === 'className') node.className = v;
        else if (k === 'testid') node.setAttribute('data-testid', v);
        else if (k === 'onclick') node.addEventListener('click', v);
        else node.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function fmtBytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
    return (n / 1073741824).toFixed(1) + ' GiB';
  }
  function fmtMs(ms) {
    if (ms === undefined) return '';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(2) + ' s';
    return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
  }
  function fmtTime(t) {
    var d = new Date(t);
    return d.toLocaleTimeString([], { hour12: false });
  }
  function statusText(s) {
    if (s.status === undefined || s.status === null) return s.done ? 'ERR' : '\u2026';
    if (s.status === 0) return 'ERR';
    return String(s.status);
  }
  function statusClass(s) {
    if (s.status === undefined || s.status === null) return s.done ? 'serr' : 'spending';
    if (s.status === 0) return 'serr';
    return 's' + String(s.status).charAt(0);
  }
  function sizeText(s) {
    if (s.upgrade && s.messages !== undefined) return s.messages + ' msgs';
    if (s.events !== undefined) return s.events + ' events';
    return fmtBytes(s.responseSize || 0);
  }

  function matches(s) {
    var f = filterEl.value.trim().toLowerCase();
    if (!f) return true;
    return (s.method + ' ' + s.target + ' ' + statusText(s) + ' ' + (s.tunnel || '')).toLowerCase().indexOf(f) >= 0;
  }

  function renderRow(s) {
    var row = rowEls.get(s.id);
    if (!row) {
      row = el('tr', { className: 'row', testid: 'exchange-row', 'data-id': s.id });
      row.addEventListener('click', function () { select(s.id); });
      rowEls.set(s.id, row);
      var before = null;
      // Newest first: find the first row with a smaller id.
      for (var i = 0; i < rowsEl.children.length; i++) {
        var other = rowsEl.children[i];
        if (Number(other.getAttribute('data-id')) < s.id) { before = other; break; }
      }
      rowsEl.insertBefore(row, before);
    }
    while (row.firstChild) row.removeChild(row.firstChild);
    var path = el('td', { className: 'c-path', testid: 'row-path', title: s.target }, s.target);
    if (s.replayOf !== undefined) path.appendChild(el('span', { className: 'tag', text: 'replay' }));
    if (s.upgrade) path.appendChild(el('span', { className: 'tag', text: s.messages !== undefined ? 'ws' : 'upgrade' }));
    if (s.events !== undefined) path.appendChild(el('span', { className: 'tag', text: 'sse' }));
    row.appendChild(el('td', { className: 'c-method', testid: 'row-method' }, s.method));
    row.appendChild(path);
    row.appendChild(el('td', { className: 'c-status ' + statusClass(s), testid: 'row-status', title: s.error || s.reason || '' }, statusText(s)));
    row.appendChild(el('td', { className: 'c-dur', testid: 'row-duration' }, fmtMs(s.durationMs)));
    row.appendChild(el('td', { className: 'c-size', testid: 'row-size' }, sizeText(s)));
    row.appendChild(el('td', { className: 'c-time' }, fmtTime(s.startedAt)));
    row.classList.toggle('selected', s.id === selected);
    row.classList.toggle('hidden', !matches(s));
  }

  function upsert(s) {
    var old = summaries.get(s.id);
    if (old && old.rev > s.rev) return;
    summaries.set(s.id, s);
    renderRow(s);
    if (s.id === selected) scheduleRefresh();
  }

  function removeIds(ids) {
    ids.forEach(function (id) {
      summaries.delete(id);
      var row = rowEls.get(id);
      if (row) row.remove();
      rowEls.delete(id);
      if (id === selected) {
        selected = null;
        showEmpty('That exchange was evicted (the inspector keeps the most recent ones).');
      }
    });
  }

  function showEmpty(text) {
    while (detailEl.firstChild) detailEl.removeChild(detailEl.firstChild);
    detailEl.appendChild(el('div', { id: 'empty' }, text));
    current = null;
  }

  function api(path, options) {
    return fetch(path, options).then(function (res) {
      var type = res.headers.get('content-type') || '';
      var body = type.indexOf('application/json') === 0 ? res.json() : res.text();
      return body.then(function (data) {
        if (!res.ok) throw new Error((data && data.error) || ('HTTP ' + res.status));
        return data;
      });
    });
  }

  function loadList() {
    return api('/api/exchanges').then(function (data) {
      var seen = new Set();
      data.exchanges.forEach(function (s) { seen.add(s.id); upsert(s); });
      removeIds(Array.from(summaries.keys()).filter(function (id) { return !seen.has(id); }));
    });
  }

  var tunnelsTimer = null;

  function loadTunnels() {
    api('/api/tunnels').then(function (data) {
      var t = document.getElementById('tunnels');
      t.textContent = data.tunnels.map(function (x) {
        var target = x.target.protocol + '//' + (x.target.host.indexOf(':') >= 0 ? '[' + x.target.host + ']' : x.target.host) + ':' + x.target.port;
        var traffic = x.traffic
          ? ' \u00b7 ' + x.traffic.requests + ' req, ' + fmtBytes(x.traffic.bytesIn) + ' in, ' + fmtBytes(x.traffic.bytesOut) + ' out' +
            (x.traffic.channels ? ', ' + x.traffic.channels + ' channels' : '')
          : '';
        return x.url + ' \u2192 ' + target + traffic;
      }).join('   ') || 'no tunnel online yet';
      renderHints(data.hints || []);
    }).catch(function () {});
  }

  // A dev server's host-check refusal, explained by the client (once per tunnel): why, and the fixes.
  function renderHints(hints) {
    var box = document.getElementById('hints');
    box.textContent = '';
    box.classList.toggle('hidden', hints.length === 0);
    hints.forEach(function (h) {
      box.appendChild(el('div', { testid: 'hint' },
        el('strong', null, h.serverName + ' refused ' + h.host),
        ' (' + h.method + ' ' + h.target + ' ' + h.status + ', tunnel ' + h.tunnel + '): ' + h.why));
      var list = el('ul');
      h.fixes.forEach(function (f) { list.appendChild(el('li', null, el('code', null, f))); });
      box.appendChild(list);
      if (h.note) box.appendChild(el('div', { className: 'note' }, 'Note: ' + h.note));
    });
  }

  function select(id) {
    selected = id;
    editing = false;
    rowEls.forEach(function (row, rid) { row.classList.toggle('selected', rid === id); });
    refresh();
  }

  function scheduleRefresh() {
    if (refreshTimer || editing) return;
    refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, 300);
  }

  function refresh() {
    var id = selected;
    if (id === null) return;
    api('/api/exchanges/' + id).then(function (d) {
      if (id !== selected || editing) return;
      current = d;
      renderDetail(d);
    }).catch(function (err) { if (id === selected) showEmpty(err.message); });
  }

  function kvTable(pairs, testid) {
    var t = el('table', { className: 'kv', testid: testid });
    if (!pairs || pairs.length === 0) t.appendChild(el('tr', null, el('td', { text: '(none)' }), el('td')));
    (pairs || []).forEach(function (p) { t.appendChild(el('tr', { testid: 'header' }, el('td', { text: p[0] }), el('td', { text: p[1] }))); });
    return t;
  }

  function hexdump(base64, max) {
    var bin = atob(base64);
    var n = Math.min(bin.length, max);
    var lines = [];
    for (var off = 0; off < n; off += 16) {
      var hex = [], asc = '';
      for (var i = off; i < Math.min(off + 16, n); i++) {
        var c = bin.charCodeAt(i);
        hex.push((c < 16 ? '0' : '') + c.toString(16));
        asc += c >= 32 && c < 127 ? bin.charAt(i) : '.';
      }
      lines.push(('0000000' + off.toString(16)).slice(-8) + '  ' + (hex.join(' ') + new Array(49).join(' ')).slice(0, 48) + ' ' + asc);
    }
    if (bin.length > n) lines.push('\u2026 ' + (bin.length - n) + ' more bytes');
    return lines.join('\n');
  }

  function compactHex(base64, max) {
    var bin = atob(base64);
    var out = [];
    for (var i = 0; i < Math.min(bin.length, max); i++) {
      var c = bin.charCodeAt(i);
      out.push((c < 16 ? '0' : '') + c.toString(16));
    }
    return out.join(' ') + (bin.length > max ? ' \u2026' : '');
  }

  function bodyView(b, testid) {
    var box = el('div', { testid: testid, 'data-kind': b.kind });
    var meta = [b.kind === 'json' ? 'JSON' : b.kind, fmtBytes(b.size)];
    if (b.contentType) meta.push(b.contentType);
    if (b.decoded) meta.push('decoded from ' + b.contentEncoding + ' (' + fmtBytes(b.decodedSize || 0) + ')');
    else if (b.contentEncoding) meta.push(b.contentEncoding + '-encoded');
    if (b.truncated) meta.push('truncated: first ' + fmtBytes(b.captured) + ' kept');
    box.appendChild(el('div', { className: 'bodymeta', testid: testid + '-meta' }, meta.join(' \u00b7 ')));
    if (b.kind === 'empty') return box;
    if (b.text !== undefined) box.appendChild(el('pre', { testid: testid + '-text' }, b.text));
    else if (b.base64 !== undefined) {
      box.appendChild(el('div', { testid: testid + '-summary' }, b.summary || 'binary'));
      box.appendChild(el('pre', { testid: testid + '-hex' }, hexdump(b.base64, 1024)));
    }
    return box;
  }

  function messagesTable(ws, startedAt) {
    var wrap = el('div');
    var info = [ws.total + ' messages', fmtBytes(ws.bytesIn) + ' in', fmtBytes(ws.bytesOut) + ' out'];
    if (ws.deflate) info.push('permessage-deflate');
    if (ws.total > ws.messages.length) info.push('showing the last ' + ws.messages.length);
    wrap.appendChild(el('div', { className: 'note' }, info.join(' \u00b7 ')));
    if (ws.error) wrap.appendChild(el('div', { className: 'error', testid: 'ws-error' }, ws.error));
    var t = el('table', { className: 'msgs', testid: 'ws-messages' },
      el('tr', null, el('th', { text: '+ms' }), el('th', { text: 'Direction' }), el('th', { text: 'Type' }), el('th', { text: 'Size' }), el('th', { text: 'Data' })));
    ws.messages.forEach(function (m) {
      var data = m.text !== undefined ? m.text : m.base64 !== undefined ? compactHex(m.base64, 64) : '';
      if (m.type === 'close') data = 'code ' + (m.closeCode === undefined ? '(none)' : m.closeCode) + (m.text ? ' ' + m.text : '');
      if (m.note) data = m.note;
      if (m.truncated && !m.note) data += ' \u2026 (truncated)';
      t.appendChild(el('tr', { testid: 'ws-message', 'data-direction': m.direction, 'data-type': m.type },
        el('td', { text: String(m.at - startedAt) }),
        el('td', { className: 'dir-' + m.direction, text: m.direction === 'in' ? 'client \u2192 local' : 'local \u2192 client' }),
        el('td', { text: m.type + (m.compressed ? ' (deflate)' : '') }),
        el('td', { text: fmtBytes(m.size) }),
        el('td', { className: 'data', text: data })));
    });
    wrap.appendChild(t);
    return wrap;
  }

  function eventsTable(sse, startedAt) {
    var wrap = el('div');
    wrap.appendChild(el('div', { className: 'note' }, sse.total + ' events' + (sse.total > sse.events.length ? ' \u00b7 showing the last ' + sse.events.length : '')));
    var t = el('table', { className: 'msgs', testid: 'sse-events' },
      el('tr', null, el('th', { text: '+ms' }), el('th', { text: 'Event' }), el('th', { text: 'Id' }), el('th', { text: 'Data' })));
    sse.events.forEach(function (e) {
      t.appendChild(el('tr', { testid: 'sse-event' },
        el('td', { text: String(e.at - startedAt) }),
        el('td', { text: e.event || 'message' }),
        el('td', { text: e.id || '' }),
        el('td', { className: 'data', text: e.data + (e.truncated ? ' \u2026 (truncated)' : '') })));
    });
    wrap.appendChild(t);
    return wrap;
  }

  function renderDetail(d) {
    while (detailEl.firstChild) detailEl.removeChild(detailEl.firstChild);
    var status = d.response ? d.response.status + ' ' + d.response.reason : d.done ? (d.status ? String(d.status) : 'no response') : 'waiting for the response\u2026';
    detailEl.appendChild(el('h2', { testid: 'detail-title' }, d.method + ' ' + d.url));
    var meta = el('div', { className: 'meta', testid: 'detail-meta' },
      el('span', { className: statusClass(d), testid: 'detail-status' }, status),
      ' \u00b7 ' + (d.durationMs !== undefined ? fmtMs(d.durationMs) : 'in progress') +
      ' \u00b7 ' + new Date(d.startedAt).toLocaleString() + ' \u00b7 tunnel ' + (d.tunnel || '?') + ' \u00b7 #' + d.id);
    if (d.replayOf !== undefined) {
      meta.appendChild(document.createTextNode(' \u00b7 replay of '));
      meta.appendChild(el('a', { onclick: function () { select(d.replayOf); } }, '#' + d.replayOf));
    }
    detailEl.appendChild(meta);
    if (d.error) detailEl.appendChild(el('div', { className: 'error', testid: 'detail-error' }, d.error));

    var actions = el('div', { className: 'actions' });
    var replayBtn = el('button', { type: 'button', className: 'primary', testid: 'replay', disabled: d.upgrade }, 'Replay');
    replayBtn.addEventListener('click', function () { replay(d.id, {}); });
    var editBtn = el('button', { type: 'button', testid: 'edit-replay', disabled: d.upgrade }, 'Edit & Replay');
    editBtn.addEventListener('click', function () { showEdit(d); });
    var curlBtn = el('button', { type: 'button', testid: 'copy-curl' }, 'Copy as curl');
    curlBtn.addEventListener('click', function () { copyCurl(d.id); });
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
      detailEl.appendChild(el('h3', null, d.websocket.protocol === 'websocket' || d.websocket.messages.length ? 'WebSocket messages' : 'Channel'));
      detailEl.appendChild(messagesTable(d.websocket, d.startedAt));
    }
    if (d.sse) {
      detailEl.appendChild(el('h3', null, 'Server-sent events'));
      detailEl.appendChild(eventsTable(d.sse, d.startedAt));
    }
  }

  function note(text, isError) {
    var n = document.getElementById('action-note');
    if (!n) return;
    n.textContent = text;
    n.className = isError ? 'note serr' : 'note';
  }

  function replay(id, edits) {
    note('replaying\u2026');
    return api('/api/exchanges/' + id + '/replay', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(edits),
    }).then(function (r) {
      editing = false;
      select(r.id);
    }).catch(function (err) { note('replay failed: ' + err.message, true); });
  }

  function showEdit(d) {
    editing = true;
    var slot = document.getElementById('edit-slot');
    while (slot.firstChild) slot.removeChild(slot.firstChild);
    var form = el('form', { className: 'edit', testid: 'edit-form' });
    var method = el('input', { type: 'text', testid: 'edit-method', value: d.method, 'aria-label': 'Method' });
    var target = el('input', { type: 'text', testid: 'edit-target', value: d.target, 'aria-label': 'Path' });
    var headers = el('textarea', { testid: 'edit-headers', 'aria-label': 'Headers', spellcheck: 'false' });
    headers.value = d.request.headers
      .filter(function (p) { return ['content-length', 'transfer-encoding'].indexOf(p[0].toLowerCase()) < 0; })
      .map(function (p) { return p[0] + ': ' + p[1]; }).join('\n');
    var body = el('textarea', { testid: 'edit-body', 'aria-label': 'Body', spellcheck: 'false' });
    var b = d.request.body;
    var binary = b.kind === 'binary';
    if (binary) {
      body.disabled = true;
      body.placeholder = 'binary body (' + fmtBytes(b.size) + ') is sent as it was';
    } else {
      body.value = b.decoded ? '' : (b.text || '');
    }
    var hint = b.truncated ? el('div', { className: 'note' }, 'The captured body was cut at ' + fmtBytes(b.captured) + ' of ' + fmtBytes(b.size) + '; what is in the box is what will be sent.') : null;
    var send = el('button', { type: 'submit', className: 'primary', testid: 'edit-send' }, 'Send');
    var cancel = el('button', { type: 'button', testid: 'edit-cancel' }, 'Cancel');
    cancel.addEventListener('click', function () { editing = false; refresh(); });
    form.appendChild(el('label', null, 'Method'));
    form.appendChild(method);
    form.appendChild(el('label', null, 'Path'));
    form.appendChild(target);
    form.appendChild(el('label', null, 'Headers'));
    form.appendChild(headers);
    form.appendChild(el('label', null, 'Body'));
    form.appendChild(el('div', null, body, hint));
    form.appendChild(el('div', { className: 'buttons' }, send, cancel));
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var pairs = [];
      var lines = headers.value.split(/\r?\n/);
      for (var i = 0; i < lines.length; i++) {
        var line = lines[i];
        if (!line.trim()) continue;
        var colon = line.indexOf(':');
        if (colon <= 0) { note('header line ' + (i + 1) + ' needs "Name: value"', true); return; }
        pairs.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
      }
      var edits = { method: method.value.trim(), target: target.value.trim(), headers: pairs };
      if (!binary && !b.decoded) edits.body = body.value;
      replay(d.id, edits);
    });
    slot.appendChild(form);
    method.focus();
  }

  // The curl command shown for an exchange; kept across re-renders of its details (they follow every update).
  var shownCurl = null;

  function showCurl() {
    var slot = document.getElementById('curl-slot');
    if (!slot || !shownCurl || shownCurl.id !== selected) return;
    while (slot.firstChild) slot.removeChild(slot.firstChild);
    slot.appendChild(el('pre', { testid: 'curl-output' }, shownCurl.text));
  }

  function copyCurl(id) {
    api('/api/exchanges/' + id + '/curl').then(function (text) {
      shownCurl = { id: id, text: text };
      showCurl();
      var done = function () { note('curl command copied'); };
      var fail = function () { note('select the command above and copy it'); };
      if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, fail);
      else fail();
    }).catch(function (err) { note(err.message, true); });
  }

  filterEl.addEventListener('input', function () {
    summaries.forEach(function (s) { var row = rowEls.get(s.id); if (row) row.classList.toggle('hidden', !matches(s)); });
  });
  document.getElementById('clear').addEventListener('click', function () {
    api('/api/clear', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' }).catch(function () {});
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.target && (ev.target.tagName === 'INPUT' || ev.target.tagName === 'TEXTAREA')) return;
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    var visible = Array.from(rowsEl.children).filter(function (r) { return !r.classList.contains('hidden'); });
    if (visible.length === 0) return;
    var at = visible.findIndex(function (r) { return Number(r.getAttribute('data-id')) === selected; });
    var next = visible[Math.max(0, Math.min(visible.length - 1, at + (ev.key === 'ArrowDown' ? 1 : -1)))];
    ev.preventDefault();
    select(Number(next.getAttribute('data-id')));
    next.scrollIntoView({ block: 'nearest' });
  });

  function connect() {
    var es = new EventSource('/api/events');
    es.addEventListener('open', function () {
      connEl.textContent = 'live';
      connEl.className = 'live';
      loadList().catch(function () {});
      loadTunnels();
    });
    es.addEventListener('exchange', function (e) {
      var s = JSON.parse(e.data);
      upsert(s);
      // A finished 400 or 403 may have brought a host-check hint: show it now rather than at the next poll.
      if (s.done && (s.status === 400 || s.status === 403)) loadTunnels();
    });
    // The relay's counters change as traffic flows: refresh the header now and then.
    if (!tunnelsTimer) tunnelsTimer = setInterval(loadTunnels, 5000);
    es.addEventListener('evict', function (e) { removeIds(JSON.parse(e.data)); });
    es.addEventListener('clear', function () {
      removeIds(Array.from(summaries.keys()));
      showEmpty('Cleared.');
    });
    es.addEventListener('error', function () {
      connEl.textContent = 'reconnecting';
      connEl.className = 'down';
    });
  }
  connect();
  setInterval(loadTunnels, 5000);
})();
</script>
</body>
</html>
`;
