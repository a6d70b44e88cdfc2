// Mutation testing of the emulated ESP32 writer's checks (npm run test:mutation runs it after
// stryker.config.mjs): offset-addressed writes that refuse gaps and changed bytes, the whole-image SHA-256 and
// image check at end, what may boot. Its tests include the DeviceScript VM ones (jest.stryker-vm.config.js).
import base from "./stryker.config.mjs";

export default {
  ...base,
  jest: { ...base.jest, configFile: "jest.stryker-vm.config.js" },
  mutate: ["device/host/esp/ota-ops.ts", "device/host/esp/image-check.ts", "device/host/writer-service.ts"],
  timeoutMS: 60000,
  htmlReporter: { fileName: "reports/mutation-writer/index.html" },
  jsonReporter: { fileName: "reports/mutation-writer/mutation.json" },
};
