/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testTimeout: 60000,
  // The last line of a run lists every skipped test and why; under CI a skip fails the run.
  reporters: ['default', '<rootDir>/test/helpers/skip-reporter.js'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/test/tsconfig.json' }],
  },
};
