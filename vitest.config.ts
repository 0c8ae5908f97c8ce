import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The suites share one PostgreSQL and one MariaDB database: one file at a time.
    fileParallelism: false,
    testTimeout: 30_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
    hookTimeout: 60_000,
  },
});
