// The serial pass: soak, hygiene, hostile-load and cluster tests, one file at a time with nothing else running.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/load/**/*.test.ts', 'test/cluster/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    maxWorkers: 1,
    fileParallelism: false,
    pool: 'forks',
  },
});
