//! Where data lives in linear memory: a bump allocator over one region,
//! reserved once, and a fixed scratch buffer.
//!
//! Why: data-path buffers (I/O payloads, PDUs) must live inside the wasm
//! memory so kernels reach them without a copy, and the JS side keeps
//! `Uint8Array` views of them. A `memory.grow` detaches every such view, so
//! the memory grows exactly once, in `heap_init`, to the size chosen at
//! start-up; afterwards nothing in this module grows it and allocation past
//! the end fails (returns 0). Buffers are long-lived pools, so there is no
//! `free`: the pools themselves recycle their buffers.

use core::arch::wasm32;

const PAGE_BYTES: usize = 65536;
/// Largest alignment a caller may ask for: one wasm page.
const ALIGN_MAX: usize = PAGE_BYTES;

extern "C" {
    /// First byte after the stack and static data, provided by wasm-ld.
    static __heap_base: u8;
}

/// Next free byte; 0 until `heap_init` has run.
static mut HEAP_NEXT: usize = 0;
/// One past the last byte of the reserved region.
static mut HEAP_END: usize = 0;

/// `heap_init` results (mirrored in wasm/kernels.ts).
pub const HEAP_OK: i32 = 0;
pub const HEAP_ERR_AGAIN: i32 = -1;
pub const HEAP_ERR_GROW: i32 = -2;

/// Reserves `bytes` (rounded up to whole pages) for the heap, growing the
/// memory once. Returns `HEAP_OK`, `HEAP_ERR_AGAIN` when already reserved,
/// or `HEAP_ERR_GROW` when the engine refused to grow the memory.
#[no_mangle]
pub extern "C" fn heap_init(bytes: usize) -> i32 {
    // SAFETY: single-threaded module; statics are only touched here.
    unsafe {
        if HEAP_END != 0 {
            return HEAP_ERR_AGAIN;
        }
        let base = align_up(&__heap_base as *const u8 as usize, 16);
        let have = wasm32::memory_size(0) * PAGE_BYTES;
        let want = match base.checked_add(bytes) {
            Some(end) => end,
            None => return HEAP_ERR_GROW,
        };
        if want > have {
            let pages = (want - have + PAGE_BYTES - 1) / PAGE_BYTES;
            if wasm32::memory_grow(0, pages) == usize::MAX {
                return HEAP_ERR_GROW;
            }
        }
        HEAP_NEXT = base;
        HEAP_END = wasm32::memory_size(0) * PAGE_BYTES;
        HEAP_OK
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two, at most one
/// page). Returns the offset in linear memory, or 0 when the heap is not
/// reserved, the arguments are invalid, or the region is exhausted.
#[no_mangle]
pub extern "C" fn heap_alloc(size: usize, align: usize) -> usize {
    if align == 0 || align > ALIGN_MAX || !align.is_power_of_two() {
        return 0;
    }
    // SAFETY: single-threaded module; statics are only touched here.
    unsafe {
        if HEAP_END == 0 {
            return 0;
        }
        let start = match HEAP_NEXT.checked_add(align - 1) {
            Some(x) => x & !(align - 1),
            None => return 0,
        };
        match start.checked_add(size) {
            Some(end) if end <= HEAP_END => {
                HEAP_NEXT = end;
                start
            }
            _ => 0,
        }
    }
}

/// Bytes handed out so far, including alignment padding.
#[no_mangle]
pub extern "C" fn heap_used() -> usize {
    // SAFETY: plain reads of module statics.
    unsafe {
        if HEAP_END == 0 {
            0
        } else {
            HEAP_NEXT - align_up(&__heap_base as *const u8 as usize, 16)
        }
    }
}

/// Size of the reserved region (0 before `heap_init`).
#[no_mangle]
pub extern "C" fn heap_capacity() -> usize {
    // SAFETY: plain reads of module statics.
    unsafe {
        if HEAP_END == 0 {
            0
        } else {
            HEAP_END - align_up(&__heap_base as *const u8 as usize, 16)
        }
    }
}

/// Bytes in the scratch buffer.
pub const SCRATCH_BYTES: usize = 65536;

/// Staging area for data that lives outside linear memory (the JS side
/// copies it in, in pieces of at most `SCRATCH_BYTES`, before calling a
/// kernel). It is static, hence present from instantiation on: kernels work
/// before `heap_init`, and staging never allocates. Zero-initialised, so it
/// costs no bytes in the module file.
#[repr(align(64))]
struct Scratch([u8; SCRATCH_BYTES]);
static mut SCRATCH: Scratch = Scratch([0; SCRATCH_BYTES]);

/// Offset of the scratch buffer.
#[no_mangle]
pub extern "C" fn scratch_ptr() -> *mut u8 {
    // SAFETY: only the address is taken; the JS side does the writes.
    unsafe { SCRATCH.0.as_mut_ptr() }
}

/// Size of the scratch buffer.
#[no_mangle]
pub extern "C" fn scratch_bytes() -> usize {
    SCRATCH_BYTES
}

const fn align_up(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}
