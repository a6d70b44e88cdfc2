// Hot paths that are synchronous unless they must wait for something (SQLite is read synchronously; PostgreSQL,
// or a lookup that is not cached, is not): returning the value itself spares a promise and a turn of the event loop.
export type MaybePromise<T> = T | Promise<T>;
