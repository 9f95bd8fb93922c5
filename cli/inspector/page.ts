// The inspector's single page: its markup, with the script (page/app.ts) and styles (page/style.css) built into dist/.
import { readFileSync } from 'node:fs';
import { ErrorCode, GgrokError } from '../../protocol/errors.js';

/**
 * Where the built script and styles are: `page/` next to this module in dist/. Run from the TypeScript sources
 * (tests, tsx), this module is cli/inspector/page.ts, and the build output is read from dist/ all the same.
 */
export const PAGE_ASSETS_DIR = new URL(
  import.meta.url.endsWith('.ts') ? '../../dist/cli/inspector/page/' : './page/',
  import.meta.url,
);

interface PageAssets {
  script: string;
  style: string;
}

let assets: PageAssets | undefined;

function readAsset(name: string, closing: string): string {
  let text: string;
  try {
    text = readFileSync(new URL(name, PAGE_ASSETS_DIR), 'utf8');
  } catch (err) {
    throw new GgrokError(
      ErrorCode.InspectorAssets,
      `the inspector page's ${name} is missing from ${PAGE_ASSETS_DIR.pathname} (run npm run build)`,
      { cause: err },
    );
  }
  // Inlined into the page: a closing tag inside would end the element early.
  if (text.toLowerCase().includes(closing))
    throw new GgrokError(ErrorCode.InspectorAssets, `the inspector page's ${name} contains "${closing}"`);
  return text;
}

/** The built script and styles, read once. Throws GgrokError `inspector_assets` when the build is missing. */
export function pageAssets(): PageAssets {
  assets ??= { script: readAsset('app.js', '</script'), style: readAsset('style.css', '</style') };
  return assets;
}

/**
 * The page, its script and styles inline, allowed by `nonce` under the server's Content-Security-Policy (one
 * response, no further requests, and nothing else may run).
 */
export function inspectorPage(nonce: string): string {
  const { script, style } = pageAssets();
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ggrok inspector</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">
${style}</style>
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
<script nonce="${nonce}">
${script}</script>
</body>
</html>
`;
}
