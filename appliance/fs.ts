/**
 * Small file-system questions the `sluice` commands ask before they act.
 * @module
 */

/** Whether something accepts connections on the unix socket at `path` (an appliance serving). */
export async function isServing(path: string): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** Whether `path` exists; errors other than "not found" (e.g. permission) are thrown. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
