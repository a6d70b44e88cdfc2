// Drops the databases a test file created and left (servers in child processes, folders kept for a restart).
import { dropCreatedDatabases } from "../helpers/database";

afterAll(() => dropCreatedDatabases());
