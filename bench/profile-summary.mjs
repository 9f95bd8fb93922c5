// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function and per package.
// CLI: node bench/profile-summary.mjs <file.cpuprofile> [--top N] [--json]
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { ROOT } from './lib.mjs';

/** Pseudo-nodes V8 adds; they are not JavaScript functions. */
const IDLE = '(idle)';
const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

/** A readable location: repo-relative, node_modules/<pkg>/…, or node:internal/…. */
export function shortUrl(url) {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) return u.slice(nm + '/node_modules/'.length);
  if (u.startsWith(`${ROOT}/`)) u = u.slice(ROOT.length + 1);
  // run.mjs runs a snapshot of dist/ from bench/out/dist/; name it as the build it is.
  return u.replace(/^bench\/out\/dist\//, 'dist/');
}

/** Which bucket a function's time goes to: ggrok file, npm package, Node internals, native, GC. */
export function category(name, url) {
  if (SPECIAL.has(name)) return name;
  if (!url) return '(native / V8 builtins)';
  const u = shortUrl(url);
  if (u.startsWith('node:')) return 'node core (JS)';
  if (url.includes('/node_modules/')) {
    const parts = u.split('/');
    return `npm: ${parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]}`;
  }
  if (u.startsWith('dist/')) return `ggrok: ${u.slice(5)}`;
  return u;
}

/**
 * Aggregates self time. Sample i is charged the interval up to the next sample (as Chrome DevTools does).
 * `fromUs`/`toUs` keep only samples in that window; the profile's clock is CLOCK_MONOTONIC in µs, the same
 * clock as process.hrtime() in any process on the machine, so another process can name the window.
 * Returns totals in ms and the top functions (keyed by name + location) and categories, busiest first.
 */
export function summarize(profile, top = 10, { fromUs = -Infinity, toUs = Infinity } = {}) {
  const byId = new Map();
  for (const node of profile.nodes) byId.set(node.id, node);
  const selfUs = new Map();
  const { samples = [], timeDeltas = [] } = profile;
  let t = profile.startTime ?? 0;
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const dt = timeDeltas[i + 1] ?? 0;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, dt));
  }
  const fns = new Map();
  const cats = new Map();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    totalUs += us;
    if (name === IDLE) {
      idleUs += us;
      continue;
    }
    const loc = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${name}\u0000${loc}`;
    const f = fns.get(key) ?? { name, location: loc, category: category(name, url), selfUs: 0 };
    f.selfUs += us;
    fns.set(key, f);
    const c = category(name, url);
    cats.set(c, (cats.get(c) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us) => (busyUs > 0 ? (100 * us) / busyUs : 0);
  const functions = [...fns.values()]
    .sort((a, b) => b.selfUs - a.selfUs)
    .slice(0, top)
    .map((f) => ({
      name: f.name,
      location: f.location,
      category: f.category,
      selfMs: f.selfUs / 1000,
      pctOfBusy: pct(f.selfUs),
    }));
  const categories = [...cats.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([name, us]) => ({ name, selfMs: us / 1000, pctOfBusy: pct(us) }));
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, busyMs: busyUs / 1000, functions, categories };
}

/** Reads and summarises a .cpuprofile file. */
export function summarizeFile(file, top = 10, window = {}) {
  return summarize(JSON.parse(readFileSync(file, 'utf8')), top, window);
}

/** Markdown tables for one summary. */
export function markdown(title, s, topCategories = 8) {
  const esc = (t) => t.replace(/\|/g, '\\|');
  const lines = [
    `**${title}** — ${(s.busyMs / 1000).toFixed(2)} s non-idle of ${(s.totalMs / 1000).toFixed(2)} s sampled` +
      (s.procCpuMs !== undefined
        ? `; CPU time used (utime + stime from /proc) ${(s.procCpuMs / 1000).toFixed(2)} s`
        : ''),
    '',
    '| # | self ms | % busy | function | location |',
    '|--:|--:|--:|---|---|',
    ...s.functions.map(
      (f, i) =>
        `| ${i + 1} | ${f.selfMs.toFixed(0)} | ${f.pctOfBusy.toFixed(1)} | \`${esc(f.name)}\` | ${esc(f.location) || '(native)'} |`,
    ),
    '',
    `By package/file: ${s.categories
      .slice(0, topCategories)
      .map((c) => `${c.name} ${c.pctOfBusy.toFixed(1)}%`)
      .join(' · ')}`,
    '',
  ];
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/profile-summary.mjs <file.cpuprofile> [--top N] [--json]\n');
    process.exit(2);
  }
  const i = process.argv.indexOf('--top');
  const s = summarizeFile(file, i > 0 ? Number(process.argv[i + 1]) : 15);
  process.stdout.write(
    process.argv.includes('--json') ? `${JSON.stringify(s, null, 2)}\n` : markdown(file, s, 12),
  );
}
