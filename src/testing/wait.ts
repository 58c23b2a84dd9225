/**
 * Waiting in tests without hanging: every wait has a guard that turns a
 * hang into a named failure. The guard is not a timing assertion; it only
 * bounds how long a broken build takes to say so.
 * @module
 */

/** How long any one wait may take before the test fails naming it. */
export const GUARD_MS = 20_000;

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` until it holds; fails with `what` after {@link GUARD_MS}. */
export async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > GUARD_MS) throw new Error(`never happened: ${what}`);
    await sleep(2);
  }
}

/** Awaits `p`; fails with `what` if it has not settled after {@link GUARD_MS}. */
export async function guard<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`never happened: ${what}`)), GUARD_MS);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
