// Jest as StrykerJS runs it (stryker.config.mjs): the project's configuration without the tests that cannot
// see a mutant, because the code they check runs in another process (the CLI and the server started from
// dist/, the certificate script, the benchmarks), and without the DeviceScript VM tests, which take minutes per
// run: only the emulated writer's checks need those (stryker.writer.config.mjs uses jest.stryker-vm.config.js).
const base = require("./jest.config.js");

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  testPathIgnorePatterns: [
    "/node_modules/",
    "<rootDir>/tests/bench/",
    "<rootDir>/tests/cli/",
    "<rootDir>/tests/tls/",
    "<rootDir>/tests/device/(?!emulator\\.test\\.ts$)",
    "<rootDir>/tests/rollouts/vm-agents\\.test\\.ts$",
  ],
};
