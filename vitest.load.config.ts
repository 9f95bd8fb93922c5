// The load pass: soak, hygiene and hostile-load tests, one file at a time with nothing else running.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/load/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    maxWorkers: 1,
    fileParallelism: false,
    pool: 'forks',
  },
});
