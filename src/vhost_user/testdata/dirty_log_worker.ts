/**
 * Helper for dirty_log_test.ts: one of two writers of the same dirty log
 * byte (as two back-ends of one VM would be). In a loop it marks its own
 * page through a {@link DirtyLog}, checks that the page's bit is set, and
 * clears it again with an atomic AND (as QEMU's collector clears bits),
 * while the other worker does the same with another bit of the same byte.
 * With an atomic OR in `mark`, the other writer can never erase our bit, so
 * the check never fails; with a plain read-OR-write it sometimes does.
 *
 * Message in: `{ fd, bit, iterations, ctl }` (fd: the log's memfd, a dup
 * this worker owns; ctl: a SharedArrayBuffer of one Int32 counting the
 * workers ready, so both loops start together). Message out: the number of
 * times the bit was found missing right after `mark`.
 * @module
 */
import { mapShared } from "../../../ffi/memory.ts";
import { DirtyLog, VHOST_LOG_PAGE } from "../dirty_log.ts";

interface Job {
  fd: number;
  bit: number;
  iterations: number;
  ctl: SharedArrayBuffer;
}

const self_ = self as unknown as Worker;
self_.onmessage = (e: MessageEvent<Job>) => {
  const { fd, bit, iterations } = e.data;
  const ctl = new Int32Array(e.data.ctl);
  // Our own view of the byte, for checking and clearing (mapped before the log takes the fd).
  const view = mapShared(fd, 4096);
  const bytes = view.bytes(0, 8);
  const log = new DirtyLog("worker", (m) => console.error(m));
  log.setBase(fd, 8n, 0n);
  const mask = 1 << bit;
  const clear = ~mask & 0xff;
  const gpa = bit * VHOST_LOG_PAGE + 123;
  Atomics.add(ctl, 0, 1);
  while (Atomics.load(ctl, 0) < 2) { /* both start together */ }
  let lost = 0;
  for (let i = 0; i < iterations; i++) {
    log.mark(gpa, 1);
    if ((Atomics.load(bytes, 0) & mask) === 0) lost++;
    Atomics.and(bytes, 0, clear);
  }
  log.close();
  view.unmap();
  self_.postMessage(lost);
};
