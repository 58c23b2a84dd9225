/**
 * A running Reactor for tests: the real data-path loop, started and
 * stopped around a test.
 * @module
 */
import { Reactor } from "../reactor/mod.ts";

/** Starts a reactor loop; `stop` ends it and frees its ring. */
export function startReactor(): Promise<{ thread: Reactor; stop(): Promise<void> }> {
  const reactor = new Reactor();
  const running = reactor.run();
  return Promise.resolve({
    thread: reactor,
    async stop() {
      // Leaks show at teardown: every I/O a module started must have ended.
      if (reactor.ioInFlight !== 0) {
        throw new Error(`reactor stopped with ${reactor.ioInFlight} I/O(s) still in flight`);
      }
      await reactor.stop();
      await running;
      reactor.close();
    },
  });
}
