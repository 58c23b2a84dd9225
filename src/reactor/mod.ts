/**
 * The reactor: the poll loop the data path runs in, one io_uring per loop.
 * @module
 */
export * from "./reactor.ts";
