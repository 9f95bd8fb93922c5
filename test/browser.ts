// Real Chromium for browser tests: Debian's /usr/bin/chromium driven by playwright-core.
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import type { Cleanup } from './helpers.js';

export const CHROMIUM = '/usr/bin/chromium';

/**
 * Launches headless Chromium (closed by `cleanup`); fails with the install command when it is missing. `extraArgs`
 * go on its command line (e.g. --host-resolver-rules, to send made-up host names to 127.0.0.1).
 */
export async function launchChromium(cleanup: Cleanup, extraArgs: string[] = []): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `${CHROMIUM} is missing: run scripts/install-test-deps.sh (npm run test:setup) to install Debian's chromium.`,
    );
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Without the background-networking flags Chromium keeps dialling out, which this machine refuses.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
    timeout: 20_000,
  });
  cleanup.add(() => browser.close());
  return browser;
}
