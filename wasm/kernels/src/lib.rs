//! sluice hot-path kernels, compiled to one `wasm32-unknown-unknown` module
//! with simd128 (see docs/wasm.md).
//!
//! The module exports its linear memory and a bump allocator (`heap`) so the
//! TypeScript side can place data-path buffers inside this memory, where the
//! kernels reach them without a copy. Every kernel takes `(ptr, len)` pairs
//! that are offsets into this memory; an out-of-range access traps (the TS
//! loader checks ranges before calling, so a trap means a loader bug).
//!
//! Each kernel family lives in its own module file: `crc32c`, `virtq`
//! (descriptor-chain walking, measured against the TypeScript walker) and
//! `aes_xts` (AES-256-XTS, constant time).

#![no_std]

pub mod aes_xts;
pub mod crc32c;
pub mod heap;
pub mod virtq;

/// There is no unwinding in wasm32 with `panic = "abort"`; a panic is a
/// programmer error in a kernel, so trap at once (the JS side sees a
/// `WebAssembly.RuntimeError`).
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
