// Lint configuration (ESLint flat config with typescript-eslint).
//
// TypeScript sources get the type-aware recommended rules (floating promises, misused promises, unsafe `any`
// flows, ...), using the type information of tsconfig.json. Tests relax the `any` rules: response bodies from
// supertest and undici are `any` by design and the assertions check them.
//
// The dashboard's browser code (dashboard/src, .tsx) is type-checked against its own tsconfig.json (DOM types,
// Preact's JSX), which the project service finds beside it.
//
// device/src is not linted: it is DeviceScript, a TypeScript dialect compiled and type-checked by the pinned
// DeviceScript compiler (`devs build`, run by npm test) against its own runtime libraries (@devicescript/*, which
// the build writes into device/node_modules), without strict null checks, with `any` for packets and JSON and no
// `this` in arrow functions; the rules here would mostly flag the dialect rather than mistakes.
import js from "@eslint/js";
import { defineConfig, globalIgnores } from "eslint/config";
import globals from "globals";
import tseslint from "typescript-eslint";

export default defineConfig(
  globalIgnores(["dist/", "coverage/", "data/", "device/src/", "device/.devicescript/", "device/node_modules/"]),
  js.configs.recommended,
  {
    files: ["**/*.ts", "**/*.tsx"],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // A leading underscore marks a binding kept on purpose (an Express error handler's `next`, a property
      // taken out of a rest spread).
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_", ignoreRestSiblings: true },
      ],
      // `return await` inside try blocks, so that catch and finally see the promise settle (and nowhere else).
      "@typescript-eslint/return-await": ["error", "in-try-catch"],
      eqeqeq: ["error", "smart"],
    },
  },
  {
    files: ["tests/**/*.ts"],
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
  {
    files: ["**/*.js"],
    languageOptions: { sourceType: "commonjs", globals: globals.node },
  },
  {
    files: ["**/*.mjs"],
    languageOptions: { sourceType: "module", globals: globals.node },
  },
);
