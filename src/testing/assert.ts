/**
 * Test assertions. JSR (and so @std/assert) is unreachable here; these wrap
 * node:assert with the names and shapes of @std/assert.
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Throws when `cond` is falsy. */
export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new nodeAssert.AssertionError({ message: msg });
}

/** Deep, strict equality (typed arrays compare by content). */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (actual instanceof Uint8Array && expected instanceof Uint8Array) {
    // Compare bytes without node's slow diff of large buffers.
    if (actual.byteLength !== expected.byteLength) {
      throw new nodeAssert.AssertionError({
        message: `${msg ? msg + ": " : ""}length ${actual.byteLength} != ${expected.byteLength}`,
      });
    }
    for (let i = 0; i < actual.byteLength; i++) {
      if (actual[i] !== expected[i]) {
        throw new nodeAssert.AssertionError({
          message: `${msg ? msg + ": " : ""}byte ${i} is ${actual[i]}, expected ${expected[i]}`,
        });
      }
    }
    return;
  }
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

/** Asserts that `fn` throws an instance of `Cls`; returns the error. */
export function assertThrows<E extends Error>(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  Cls: new (...args: any[]) => E,
  includes?: string,
): E {
  try {
    fn();
  } catch (e) {
    return checkError(e, Cls, includes);
  }
  throw new nodeAssert.AssertionError({ message: `expected ${Cls.name} to be thrown` });
}

/** Asserts that `fn` rejects with an instance of `Cls`; returns the error. */
export async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  Cls: new (...args: any[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    return checkError(e, Cls, includes);
  }
  throw new nodeAssert.AssertionError({ message: `expected a rejection with ${Cls.name}` });
}

function checkError<E extends Error>(
  e: unknown,
  // deno-lint-ignore no-explicit-any
  Cls: new (...args: any[]) => E,
  includes?: string,
): E {
  if (!(e instanceof Cls)) {
    throw new nodeAssert.AssertionError({
      message: `expected ${Cls.name}, got ${
        e instanceof Error ? `${e.name}: ${e.message}` : String(e)
      }`,
    });
  }
  if (includes !== undefined && !e.message.includes(includes)) {
    throw new nodeAssert.AssertionError({
      message: `error message "${e.message}" does not include "${includes}"`,
    });
  }
  return e;
}
