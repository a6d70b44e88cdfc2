// Jest as StrykerJS runs it (stryker.config.mjs): the project's configuration without the tests that cannot
// see a mutant, because the code they check runs in another process (the CLI and the server started from
// dist/, the certificate script, the benchmarks), and without the DeviceScript VM tests, which take minutes per
// run: only the emulated writer's checks need those (stryker.writer.config.mjs uses jest.stryker-vm.config.js).
// SQLite only: a mutant is in the server's own code, which both backends run.
// STRYKER_TESTS (test file paths, comma separated) narrows the run to those files, to measure one module
// against the tests that exercise it: `STRYKER_TESTS=tests/image/signature.test.ts npx stryker run --mutate ...`.
const { projects, ...shared } = require("./jest.config.js");
const base = { ...projects[0] };
delete base.displayName;

const only = (process.env.STRYKER_TESTS ?? "").split(",").map((p) => p.trim()).filter(Boolean);

/** @type {import('jest').Config} */
module.exports = {
  ...shared,
  ...base,
  // Every folder a test reaches: jest finds the tests related to a mutated file through the files it crawled.
  roots: ["<rootDir>/tests", "<rootDir>/server"],
  ...(only.length > 0 ? { testMatch: only.map((p) => `<rootDir>/${p}`) } : {}),
  testPathIgnorePatterns: [
    "/node_modules/",
    "<rootDir>/tests/bench/",
    "<rootDir>/tests/storage/",
    "<rootDir>/tests/cli/",
    "<rootDir>/tests/tls/",
    "<rootDir>/tests/device/(?!emulator\\.test\\.ts$)",
    "<rootDir>/tests/rollouts/vm-agents\\.test\\.ts$",
  ],
};
