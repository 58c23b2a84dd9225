/**
 * Helper for vhost_user_device_test.ts: can another process see a 16-bit
 * ring index half written? A writer flips a counter in a shared memfd
 * between 0x00ff and 0x0100 (both bytes change); a reader counts values
 * that are neither (0x0000 or 0x01ff: one byte old, one new).
 *
 * Arguments: "w" or "r", then "dataview" or "u16", then the memfd's path in
 * /proc (the writer prints it), then seconds.
 * @module
 */
import { close, cstr, sym } from "../../../ffi/libc.ts";
import { mapShared, memfdCreate } from "../../../ffi/memory.ts";

const [role, how, path, secs] = Deno.args;
let fd: number;
if (role === "w") {
  fd = memfdCreate("torn-index", 4096);
  console.log(`/proc/${Deno.pid}/fd/${fd}`);
} else {
  fd = sym.open(cstr(path ?? ""), 2, 0);
  if (fd < 0) throw new Error(`cannot open ${path}`);
}
const m = mapShared(fd, 4096);
// The writer keeps its fd open: the reader opens the memfd through /proc/<pid>/fd.
if (role !== "w") close(fd);
const dv = new DataView(m.buffer);
const u16 = new Uint16Array(m.buffer);
const end = performance.now() + Number(secs ?? "1") * 1000;
if (role === "w") {
  let v = 0x00ff;
  // Until the reader is done (it writes 1 at byte 64) or the time is up.
  while (m.bytes()[64] === 0 && performance.now() < end + 5000) {
    for (let k = 0; k < 10000; k++) {
      v = v === 0x00ff ? 0x0100 : 0x00ff;
      if (how === "dataview") dv.setUint16(2, v, true);
      else u16[1] = v;
    }
  }
} else {
  let torn = 0, reads = 0, seen = 0;
  while (performance.now() < end) {
    for (let k = 0; k < 10000; k++) {
      const v = how === "dataview" ? dv.getUint16(2, true) : u16[1] as number;
      if (v === 0x00ff || v === 0x0100) seen++;
      else if (v !== 0) torn++;
      reads++;
    }
  }
  m.bytes()[64] = 1;
  console.log(JSON.stringify({ reads, seen, torn }));
}
m.unmap();
if (role === "w") close(fd);
