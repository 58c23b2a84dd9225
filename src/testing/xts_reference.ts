/**
 * An independent AES-256-XTS for tests: the XTS mode computed here in
 * TypeScript (IEEE 1619: tweak encryption, multiplication by alpha in
 * GF(2^128), xor-encrypt-xor) on top of AES-256-ECB from the `openssl`
 * command line. OpenSSL 3.0's `openssl enc` refuses XTS ciphers ("enc XTS
 * ciphers not supported"), so the mode cannot come from the command line;
 * the block cipher does, and nothing here shares code with our engines.
 * @module
 */

/** Is the `openssl` command there? */
export async function hasOpensslCli(): Promise<boolean> {
  try {
    const out = await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** Hex of `b`. */
export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Bytes of hex `s`. */
export function fromHex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function opensslEcb(
  key: Uint8Array,
  data: Uint8Array,
  decrypt: boolean,
): Promise<Uint8Array> {
  const args = ["enc", "-aes-256-ecb", "-nopad", "-K", toHex(key), ...(decrypt ? ["-d"] : [])];
  const child = new Deno.Command("openssl", { args, stdin: "piped", stdout: "piped" }).spawn();
  const w = child.stdin.getWriter();
  await w.write(data);
  await w.close();
  const out = await child.output();
  if (!out.success) throw new Error(`openssl ${args.slice(0, 3).join(" ")} failed`);
  return out.stdout;
}

/** Multiplies a 16-byte tweak by alpha (x) in GF(2^128), IEEE 1619 byte order. */
function mulAlpha(t: Uint8Array): void {
  const carry = (t[15] as number) >> 7;
  for (let i = 15; i > 0; i--) {
    t[i] = (((t[i] as number) << 1) | ((t[i - 1] as number) >> 7)) & 0xff;
  }
  t[0] = (((t[0] as number) << 1) & 0xff) ^ (carry ? 0x87 : 0);
}

/**
 * AES-256-XTS of `data` (a whole number of `dataUnitSize` units): unit `i`
 * has the tweak `firstDataUnit + i` as a 128-bit little-endian number.
 * `key` is key1 || key2 (64 bytes).
 */
export async function referenceXts(
  key: Uint8Array,
  data: Uint8Array,
  dataUnitSize: number,
  firstDataUnit: number,
  decrypt = false,
): Promise<Uint8Array> {
  const units = data.byteLength / dataUnitSize;
  const ivs = new Uint8Array(16 * units);
  const view = new DataView(ivs.buffer);
  for (let i = 0; i < units; i++) {
    const n = BigInt(firstDataUnit + i);
    view.setBigUint64(16 * i, n & 0xffff_ffff_ffff_ffffn, true);
    view.setBigUint64(16 * i + 8, n >> 64n, true);
  }
  // T = E_key2(tweak), then T * alpha^j for block j of the unit.
  const t0 = await opensslEcb(key.subarray(32, 64), ivs, false);
  const tweaks = new Uint8Array(data.byteLength);
  for (let i = 0; i < units; i++) {
    const t = t0.slice(16 * i, 16 * i + 16);
    for (let j = 0; j < dataUnitSize / 16; j++) {
      tweaks.set(t, i * dataUnitSize + 16 * j);
      mulAlpha(t);
    }
  }
  const pre = data.map((b, i) => b ^ (tweaks[i] as number));
  const mid = await opensslEcb(key.subarray(0, 32), pre, decrypt);
  return mid.map((b, i) => b ^ (tweaks[i] as number));
}

/** IEEE 1619-2007 Annex B, vector 10: XTS-AES-256, one 512-byte data unit, tweak 0xff. */
export const IEEE1619_VECTOR_10 = {
  key:
    "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592",
  dataUnit: 0xff,
  /** Bytes 0..255 twice. */
  plaintext: Array.from({ length: 512 }, (_, i) => (i % 256).toString(16).padStart(2, "0")).join(
    "",
  ),
  ciphertext: [
    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44",
    "680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0",
    "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7d",
    "e8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f",
    "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6",
    "dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1",
    "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b",
    "11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac",
    "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493",
    "c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa",
    "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151",
  ].join(""),
};
