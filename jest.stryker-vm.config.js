// Jest as StrykerJS runs it for the emulated writer (stryker.writer.config.mjs): the writer's unit tests and
// one file of end-to-end updates through the real agent in the DeviceScript VM, which reaches the writer the
// way a device does (Jacdac commands and bulk frames, pipelined, with a lost write).
const { projects, ...shared } = require("./jest.config.js");
const base = { ...projects[0] };
delete base.displayName;

/** @type {import('jest').Config} */
module.exports = {
  ...shared,
  ...base,
  // Every folder a test reaches: jest finds the tests related to a mutated file through the files it crawled.
  roots: ["<rootDir>/tests", "<rootDir>/device", "<rootDir>/server"],
  testMatch: ["<rootDir>/tests/device/emulator.test.ts", "<rootDir>/tests/device/update.test.ts"],
};
