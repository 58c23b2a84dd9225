/**
 * Network helpers for tests.
 * @module
 */

/** A loopback TCP port nothing listens on now (bind to port 0, read it back, let go). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
