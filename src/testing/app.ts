/**
 * An App (the appliance without its sockets) started around a test.
 * @module
 */
import { App } from "../app.ts";

/**
 * Starts an App, runs `fn` with it, and shuts it down whatever happens;
 * `teardown` runs first (e.g. to close a subsystem's listeners).
 */
export async function withApp(
  fn: (app: App) => Promise<void>,
  teardown?: (app: App) => Promise<void>,
): Promise<void> {
  const app = new App();
  app.start();
  try {
    await fn(app);
  } finally {
    await teardown?.(app);
    await app.shutdown();
  }
}
