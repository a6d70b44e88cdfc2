// The jest project "postgres": this file's servers, child processes and `ota` commands store in PostgreSQL
// (tests/helpers/database.ts gives each data folder its own database).
process.env.OTA_TEST_BACKEND = "postgres";
