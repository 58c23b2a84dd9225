/**
 * The WASM fast path of request parsing: when a queue's guest memory lies
 * in the wasm guest window (wasm/guest_window.ts), the vhost backend walks
 * each chain with the WASM walker (wasm/virtq.ts) and fills its
 * {@link BlkRequest} from the result, exactly as `BlkRequest.parse` would.
 *
 * Only the layout every driver we know uses takes this path: a read or a
 * write whose header is one 16-byte descriptor and whose status is one
 * 1-byte descriptor. Anything else (other request types, split headers, a
 * status byte sharing a data buffer, and every chain the walker refuses)
 * returns false and goes through the TypeScript walker, which also names
 * the reason when it refuses. bench/virtq_bench.ts has the figures.
 * @module
 */
import type { WasmVirtqWalker } from "../../wasm/virtq.ts";
import type { BlkRequest } from "./blk.ts";

/** Words per segment in {@link WasmVirtqWalker.segWords}. */
const W = 6;

/**
 * Walks `head` with `walker` and fills `req` for a read or write in the
 * common layout; false means "use the TypeScript path" (req is then left in
 * a state that path overwrites).
 */
export function parseBlkWithWasm(walker: WasmVirtqWalker, head: number, req: BlkRequest): boolean {
  const n = walker.walk(head);
  if (n < 3) return false;
  const type = walker.blkType;
  if (type > 1) return false;
  const words = walker.segWords;
  const last = W * (n - 1);
  if (words[3] !== 16 || words[last + 3] !== 1) return false;
  req.type = type;
  req.sector = walker.sector;
  req.reason = "";
  req.rangeCount = 0;
  req.dataBytes = walker.dataBytes;
  const sr = words[last + 5] as number;
  req.statusRegion = walker.regionIndex[sr] as number;
  req.statusOffset = (words[last + 2] as number) - (walker.regionPtr[sr] as number);
  for (let i = 1; i < n - 1; i++) {
    const o = W * i;
    const r = words[o + 5] as number;
    req.dataRegion[i - 1] = walker.regionIndex[r] as number;
    req.dataOffset[i - 1] = (words[o + 2] as number) - (walker.regionPtr[r] as number);
    req.dataLen[i - 1] = words[o + 3] as number;
  }
  req.dataCount = n - 2;
  return true;
}
