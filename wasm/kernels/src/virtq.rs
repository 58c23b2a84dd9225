//! Split-virtqueue descriptor-chain walking and virtio-blk header parsing,
//! in WebAssembly, for the measurement that decides where this work runs
//! (bench/virtq_bench.ts, docs/wasm.md "Ring parsing").
//!
//! The rules are those of the TypeScript walker in src/virtio/virtqueue.ts
//! (`walkChain`) and of `BlkRequest.parse` for reads and writes, so the two
//! can be compared like for like and cross-checked by wasm/virtq_test.ts:
//! every descriptor inside one guest region, no loops, at most queue-size
//! descriptors, one level of indirect table only when negotiated, readable
//! buffers before writable ones, a 16-byte readable header and a writable
//! status byte at the end.
//!
//! Guest memory must sit inside this module's linear memory (the benchmark
//! places it there); `regions` maps guest physical addresses to offsets.

/// Descriptor flags (virtio 1.2, 2.7.5).
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const DESC_BYTES: u64 = 16;
const HEADER_BYTES: u32 = 16;
const MAX_REGIONS: usize = 8;

/// Results of `virtq_walk` (negative: the chain is refused, as in the TS walker).
pub const WALK_DESC_INDEX: i32 = -1;
pub const WALK_LOOP: i32 = -2;
pub const WALK_INDIRECT: i32 = -3;
pub const WALK_TOO_LONG: i32 = -4;
pub const WALK_ADDRESS: i32 = -5;
pub const WALK_ORDER: i32 = -6;
pub const WALK_NO_STATUS: i32 = -7;
pub const WALK_BAD_REQUEST: i32 = -8;

/// One guest memory region as seen from linear memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Region {
    pub gpa: u64,
    pub len: u64,
    pub ptr: u32,
    pub _pad: u32,
}

/// One walked segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Segment {
    pub gpa: u64,
    pub ptr: u32,
    pub len: u32,
    pub writable: u32,
    /// Index of the region (in `WalkCtx::regions`) the segment lies in.
    pub region: u32,
}

/// The walker's state and outputs, laid out by the TS side (wasm/virtq.ts).
#[repr(C)]
pub struct WalkCtx {
    pub regions: [Region; MAX_REGIONS],
    pub region_count: u32,
    /// Queue size (a power of two).
    pub size: u32,
    /// Offset in linear memory of the descriptor table.
    pub desc_ptr: u32,
    /// 1 when VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: u32,
    /// Capacity of the device in 512-byte sectors.
    pub capacity: u64,
    /// Loop-detection generation; stamps equal to it were visited in this walk.
    pub gen: u32,
    /// `2 * size` u32 stamps (queue table, then indirect table).
    pub stamps_ptr: u32,
    /// `size` segments.
    pub segs_ptr: u32,
    pub seg_count: u32,
    pub readable: u32,
    pub writable: u32,
    /// Outputs of the virtio-blk parse.
    pub blk_type: u32,
    pub data_bytes: u32,
    pub sector: u64,
}

#[inline(always)]
fn translate(ctx: &WalkCtx, gpa: u64, len: u32) -> Option<(u32, u32)> {
    let mut i = 0;
    while i < ctx.region_count as usize && i < MAX_REGIONS {
        let r = &ctx.regions[i];
        if gpa >= r.gpa {
            let off = gpa - r.gpa;
            if off <= r.len && (len as u64) <= r.len - off {
                return Some((r.ptr + off as u32, i as u32));
            }
        }
        i += 1;
    }
    None
}

#[inline(always)]
unsafe fn rd16(p: u32) -> u16 {
    u16::from_le((p as *const u16).read_unaligned())
}
#[inline(always)]
unsafe fn rd32(p: u32) -> u32 {
    u32::from_le((p as *const u32).read_unaligned())
}
#[inline(always)]
unsafe fn rd64(p: u32) -> u64 {
    u64::from_le((p as *const u64).read_unaligned())
}

/// Walks the chain at `head` and parses its virtio-blk read or write
/// request: the number of segments, or a negative `WALK_*` code.
///
/// # Safety
/// `ctx` and the areas it names must lie inside linear memory (an access
/// outside traps; the TS loader lays them out).
#[no_mangle]
pub unsafe extern "C" fn virtq_walk(ctx: *mut WalkCtx, head: u32) -> i32 {
    let c = &mut *ctx;
    c.seg_count = 0;
    c.readable = 0;
    c.writable = 0;
    let size = c.size;
    if head >= size {
        return WALK_DESC_INDEX;
    }
    c.gen = c.gen.wrapping_add(1);
    if c.gen == 0 {
        let mut i = 0;
        while i < 2 * size {
            ((c.stamps_ptr + 4 * i) as *mut u32).write(0);
            i += 1;
        }
        c.gen = 1;
    }
    let gen = c.gen;
    let mut table = c.desc_ptr;
    let mut table_len = size;
    let mut stamps = c.stamps_ptr;
    let mut in_indirect = false;
    let mut idx = head;
    let mut count: u32 = 0;
    let mut readable: u64 = 0;
    let mut writable: u64 = 0;
    let mut saw_writable = false;
    loop {
        if idx >= table_len {
            return WALK_DESC_INDEX;
        }
        let stamp = (stamps + 4 * idx) as *mut u32;
        if stamp.read() == gen {
            return WALK_LOOP;
        }
        stamp.write(gen);
        let d = table + idx * DESC_BYTES as u32;
        let addr = rd64(d);
        let len = rd32(d + 8);
        let flags = rd16(d + 12);
        let next = rd16(d + 14) as u32;
        if flags & F_INDIRECT != 0 {
            if in_indirect || c.indirect == 0 || flags & F_NEXT != 0 {
                return WALK_INDIRECT;
            }
            if len == 0 || len as u64 % DESC_BYTES != 0 || len as u64 / DESC_BYTES > size as u64 {
                return WALK_INDIRECT;
            }
            table = match translate(c, addr, len) {
                Some((p, _)) => p,
                None => return WALK_INDIRECT,
            };
            table_len = (len as u64 / DESC_BYTES) as u32;
            stamps = c.stamps_ptr + 4 * size;
            in_indirect = true;
            idx = 0;
            continue;
        }
        if count >= size {
            return WALK_TOO_LONG;
        }
        let (ptr, region) = match translate(c, addr, len) {
            Some(found) => found,
            None => return WALK_ADDRESS,
        };
        let is_writable = flags & F_WRITE != 0;
        if is_writable {
            writable += len as u64;
            saw_writable = true;
        } else {
            if saw_writable {
                return WALK_ORDER;
            }
            readable += len as u64;
        }
        if readable + writable > u32::MAX as u64 {
            return WALK_ADDRESS;
        }
        let s = (c.segs_ptr + count * core::mem::size_of::<Segment>() as u32) as *mut Segment;
        s.write(Segment { gpa: addr, ptr, len, writable: is_writable as u32, region });
        count += 1;
        if flags & F_NEXT == 0 {
            break;
        }
        idx = next;
    }
    c.seg_count = count;
    c.readable = readable as u32;
    c.writable = writable as u32;
    parse_blk(c)
}

/// The virtio-blk part: header, direction, length and capacity of a read
/// or a write (other types are reported with their type and no data).
unsafe fn parse_blk(c: &mut WalkCtx) -> i32 {
    let segs = c.segs_ptr as *const Segment;
    let mut last = c.seg_count as i32 - 1;
    while last >= 0 && (*segs.add(last as usize)).len == 0 {
        last -= 1;
    }
    if last < 0 || (*segs.add(last as usize)).writable == 0 {
        return WALK_NO_STATUS;
    }
    if c.readable < HEADER_BYTES {
        return WALK_BAD_REQUEST;
    }
    // The header may be split over segments (Linux never does): gather it.
    let mut hdr = [0u8; HEADER_BYTES as usize];
    let mut got = 0usize;
    let mut i = 0usize;
    while got < hdr.len() {
        let s = *segs.add(i);
        let take = core::cmp::min(s.len as usize, hdr.len() - got);
        let mut k = 0;
        while k < take {
            hdr[got + k] = ((s.ptr as usize + k) as *const u8).read();
            k += 1;
        }
        got += take;
        i += 1;
    }
    let ty = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    c.blk_type = ty;
    c.sector = sector;
    c.data_bytes = 0;
    let readable_data = c.readable - HEADER_BYTES;
    let writable_data = c.writable - 1;
    if ty == 0 || ty == 1 {
        let is_in = ty == 0;
        if (if is_in { readable_data } else { writable_data }) != 0 {
            return WALK_BAD_REQUEST;
        }
        let bytes = if is_in { writable_data } else { readable_data };
        if bytes % 512 != 0 {
            return WALK_BAD_REQUEST;
        }
        let sectors = (bytes / 512) as u64;
        if sector > c.capacity || sectors > c.capacity - sector {
            return WALK_BAD_REQUEST;
        }
        c.data_bytes = bytes;
    }
    c.seg_count as i32
}
