/**
 * File-descriptor accounting for leak checks in tests.
 * @module
 */

/** How many file descriptors this process holds now. */
export function openFdCount(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}
