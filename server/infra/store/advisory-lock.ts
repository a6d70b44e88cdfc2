// Work that server processes sharing one PostgreSQL database must do one at a time, such as a first start's
// credentials: servers on several machines, started together on a new database, must not make two admin tokens.
// The lock is PostgreSQL's session advisory lock, held on a connection of its own (not one of the pool's, which
// the work itself needs) and released when the work is done or the connection ends. On SQLite only one process
// serves a data folder, and the work just runs.
import pg from "pg";

export async function exclusively<T>(database: { url: string } | null, name: string, work: () => Promise<T>): Promise<T> {
  if (!database) return work();
  const client = new pg.Client({ connectionString: database.url });
  // An error on the idle lock connection (the database restarting) ends the lock, and is reported by the work's own queries.
  client.on("error", () => undefined);
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext($1))", [name]);
    return await work();
  } finally {
    await client.end();
  }
}
