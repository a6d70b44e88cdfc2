/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/tests"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json", diagnostics: false }],
  },
  testTimeout: 30000,
  // Each test file starts its own HTTPS server on an ephemeral port and its own data dir.
  maxWorkers: process.env.CI ? 2 : "50%",
};
