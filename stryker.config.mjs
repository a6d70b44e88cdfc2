// Mutation testing (npm run test:mutation): StrykerJS changes one operator, condition or value at a time in
// the security and durability modules and runs the tests that cover the change; a mutant no test notices
// ("survived") is a fault the suite would let through. Results: reports/mutation/ (HTML and JSON) and the
// score table printed at the end; docs/testing.md lists the scores and what each survivor means. Add
// `--incremental` to a repeated run: only mutants whose code or covering tests changed are tested again.
export default {
  testRunner: "jest",
  jest: { projectType: "custom", configFile: "jest.stryker.config.js", enableFindRelatedTests: true },
  checkers: ["typescript"],
  tsconfigFile: "tsconfig.json",
  coverageAnalysis: "perTest",
  // Mutants in code that runs when a module loads (constant tables, regular expressions built once) would need
  // every test run with a fresh module registry each: about 8 s per mutant on 2 cores. They are left out.
  ignoreStatic: true,
  concurrency: 2,
  mutate: [
    // device authentication and keys
    "server/api/device/auth.ts",
    "server/infra/auth/*.ts",
    // manifests: what is offered, and its MAC
    "server/api/device/manifest.ts",
    "server/domain/releases/offer.ts",
    // reports
    "server/api/device/report.ts",
    "server/domain/devices/reports.ts",
    // Secure Boot v2 signature sectors: the parser and the check of a block against trusted keys
    "server/esp/signature.ts",
    // image and partition table parsers
    "server/esp/esp-image.ts",
    "server/esp/partitions.ts",
    // rollout policy
    "server/domain/rollouts/policy.ts",
    "server/domain/rollouts/member-status.ts",
  ],
  ignorePatterns: ["coverage", "data", "certs/*", "!certs/.gitkeep", "firmware/*", "!firmware/.gitkeep", ".tmp", "*.log"],
  tempDirName: ".stryker-tmp",
  cleanTempDir: "always",
  timeoutMS: 20000,
  reporters: ["clear-text", "progress", "html", "json"],
  htmlReporter: { fileName: "reports/mutation/index.html" },
  jsonReporter: { fileName: "reports/mutation/mutation.json" },
  thresholds: { high: 90, low: 75, break: null },
};
