// One run over both storage backends: every test file runs on SQLite (project "sqlite") and again on PostgreSQL
// (project "postgres", tests/setup/), except those that store nothing, which run once.
const common = {
  testEnvironment: "node",
  roots: ["<rootDir>/tests"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json", diagnostics: false }],
  },
};

/** Test files that open no storage (parsers, pure logic, documentation checks, the bench's own servers), or whose subject is not the store. */
const STORAGE_FREE = [
  "<rootDir>/tests/auth/",
  "<rootDir>/tests/bench/",
  "<rootDir>/tests/image/",
  "<rootDir>/tests/tls/",
  "<rootDir>/tests/device/emulator\\.test\\.ts$",
  "<rootDir>/tests/cli/(sign|image-version|secret-files)\\.test\\.ts$",
  // The install script, the shipped service unit and how `npm start` stops: about the process, not the store.
  "<rootDir>/tests/install/",
  "<rootDir>/tests/server/npm-start\\.test\\.ts$",
  "<rootDir>/tests/rollouts/(member-status|policy-assign|rollout-state)\\.test\\.ts$",
  "<rootDir>/tests/server/(error-codes|manifest-body|dashboard-files)\\.test\\.ts$",
  "<rootDir>/tests/mqtt/config\\.test\\.ts$",
];

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 30000,
  // Each test file starts its own HTTPS server on an ephemeral port and its own data dir (and database).
  maxWorkers: process.env.CI ? 2 : "50%",
  // A worker keeps what each test file leaves behind (module copies, buffers): after 80 files its heap passes 800 MB
  // and tearing it down at the end took longer than the 500 ms jest waits ("A worker process has failed to exit
  // gracefully"). A worker whose heap passes this between files is replaced by a fresh one.
  workerIdleMemoryLimit: "400MB",
  projects: [
    // tests/storage/ checks what only PostgreSQL has (concurrent migrations, a database that goes away).
    { ...common, displayName: "sqlite", testPathIgnorePatterns: ["/node_modules/", "<rootDir>/tests/storage/"] },
    {
      ...common,
      displayName: "postgres",
      testPathIgnorePatterns: ["/node_modules/", ...STORAGE_FREE],
      globalSetup: "<rootDir>/tests/setup/postgres-global.ts",
      globalTeardown: "<rootDir>/tests/setup/postgres-global-teardown.ts",
      setupFiles: ["<rootDir>/tests/setup/postgres-env.ts"],
      setupFilesAfterEnv: ["<rootDir>/tests/setup/postgres-after-each-file.ts"],
    },
  ],
};
