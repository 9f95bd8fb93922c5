import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Load tests and the cluster's real-process tests run alone afterwards (vitest.load.config.ts): they measure
    // latency under load, or kill and stall processes on deadlines.
    exclude: ['test/load/**', 'test/cluster/**', 'node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: keep parallelism modest so timing-sensitive e2e tests keep generous margins.
    maxWorkers: 2,
    pool: 'forks',
  },
});
