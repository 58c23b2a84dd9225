/**
 * Physical Region Page entries (NVMe Base 2.0, "Physical Region Page Entry
 * and List"): how a command points at its data when SGLs are not used.
 *
 * PRP1 addresses the first byte and may have an offset into its page;
 * every later entry addresses a whole page (offset 0). Two pages or fewer:
 * PRP2 is the second page. More: PRP2 points at a PRP list, a page of
 * 8-byte entries, each a further page (a list's last entry would chain to
 * the next list; the driver sizes its lists so one page always suffices).
 * @module
 */

/**
 * Fills DPTR (PRP1 at bytes 24-31, PRP2 at 32-39 of the SQE) for `length`
 * bytes starting at `iova`, contiguous in IOVA space (bounce buffers are).
 * `list` is the command's PRP list page (its IOVA `listIova`), used when
 * the transfer touches more than two pages. Allocation-free.
 * @returns the number of PRP list entries written (0 when none was needed)
 * @throws {RangeError} when the transfer needs more entries than one list page holds
 */
export function setPrps(
  sqe: DataView,
  iova: number,
  length: number,
  pageSize: number,
  list: DataView,
  listIova: number,
): number {
  setU64(sqe, 24, iova);
  const offset = iova % pageSize;
  const firstPageBytes = pageSize - offset;
  if (length <= firstPageBytes) {
    setU64(sqe, 32, 0);
    return 0;
  }
  const secondPage = iova - offset + pageSize;
  if (length <= firstPageBytes + pageSize) {
    setU64(sqe, 32, secondPage);
    return 0;
  }
  const pages = Math.ceil((length - firstPageBytes) / pageSize);
  if (pages * 8 > list.byteLength) {
    throw new RangeError(
      `PRP list needs ${pages} entries, the list page holds ${list.byteLength >>> 3}`,
    );
  }
  for (let i = 0; i < pages; i++) setU64(list, i * 8, secondPage + i * pageSize);
  setU64(sqe, 32, listIova);
  return pages;
}

function setU64(v: DataView, off: number, value: number): void {
  v.setUint32(off, value >>> 0, true);
  v.setUint32(off + 4, Math.floor(value / 0x1_0000_0000) >>> 0, true);
}
