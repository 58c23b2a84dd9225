/**
 * OpenSSL's libcrypto (libcrypto.so.3) through Deno FFI: the EVP cipher
 * calls the native AES-XTS engine needs (src/crypto/native_xts.ts).
 *
 * XTS through EVP takes one data unit per `EVP_EncryptUpdate` and its tweak
 * as the IV, so each data unit costs two FFI calls: `EVP_EncryptInit_ex`
 * with only the IV (the key schedule stays in the context) and the update.
 * There is no batching entry point (OpenSSL 3.0 has no multi-unit XTS call,
 * and FFI cannot run a loop on the native side). Measured here on a busy
 * 2-core machine, 1 MiB buffers: 4 KiB units ~4.2 GB/s (one 1 MiB unit in a
 * single call: ~4.3 GB/s, so the per-unit call pair costs little); 512-byte
 * units ~1.3 GB/s (the two calls dominate). Addresses passed as numbers
 * ("usize") instead of buffers are 2x slower: the fast call path takes
 * typed arrays, not 64-bit integers.
 * @module
 */

const LIBCRYPTO_PATHS = [
  "libcrypto.so.3",
  "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
  "/lib/x86_64-linux-gnu/libcrypto.so.3",
];

/** The libcrypto symbols sluice uses. */
export const libcryptoSymbols = {
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_aes_256_xts: { parameters: [], result: "pointer" },
  /** (ctx, cipher, engine, key, iv): key and iv may be null to keep the current ones. */
  EVP_EncryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  EVP_DecryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  /** (ctx, out, outl*, in, inl) */
  EVP_EncryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_DecryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  /** Pops the oldest error code of this thread's queue (0 when empty). */
  ERR_get_error: { parameters: [], result: "u64" },
  ERR_error_string_n: { parameters: ["u64", "buffer", "usize"], result: "void" },
  OPENSSL_cleanse: { parameters: ["buffer", "usize"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library. */
export type Libcrypto = Deno.DynamicLibrary<typeof libcryptoSymbols>;

let cached: Libcrypto | null | undefined;

/** libcrypto, loaded once; null when the machine does not have it (or FFI is not allowed). */
export function loadLibcrypto(): Libcrypto | null {
  if (cached !== undefined) return cached;
  cached = null;
  for (const path of LIBCRYPTO_PATHS) {
    try {
      cached = Deno.dlopen(path, libcryptoSymbols);
      break;
    } catch {
      // Try the next path; none means no native engine.
    }
  }
  return cached;
}

/** Drains libcrypto's error queue into one message (control path only). */
export function opensslErrors(lib: Libcrypto): string {
  const parts: string[] = [];
  const buf = new Uint8Array(256);
  for (;;) {
    const code = BigInt(lib.symbols.ERR_get_error());
    if (code === 0n) break;
    lib.symbols.ERR_error_string_n(code, buf, BigInt(buf.length));
    const end = buf.indexOf(0);
    parts.push(new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end)));
  }
  return parts.length > 0 ? parts.join("; ") : "no OpenSSL error recorded";
}
