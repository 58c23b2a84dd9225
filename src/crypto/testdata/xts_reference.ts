/**
 * An independent AES-256-XTS for cross-checks: the IEEE 1619 tweak chain
 * written here in TypeScript, the block cipher from OpenSSL on the command
 * line (`openssl enc -aes-256-ecb -nopad`). OpenSSL 3's `enc` refuses XTS
 * itself ("XTS ciphers not supported"), hence ECB plus the chain.
 * @module
 */

import { toHex } from "./xts_vectors.ts";

/** True when the `openssl` command runs. */
export function haveOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function ecb(key: Uint8Array, data: Uint8Array, decrypt: boolean): Promise<Uint8Array> {
  const args = ["enc", "-aes-256-ecb", "-nopad", "-K", toHex(key)];
  if (decrypt) args.push("-d");
  const child = new Deno.Command("openssl", { args, stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(data);
  await writer.close();
  const out = await child.output();
  if (!out.success) throw new Error("openssl enc -aes-256-ecb failed");
  return out.stdout;
}

/** Multiplies a tweak by alpha in place (IEEE 1619 5.2, little endian). */
function mulAlpha(t: Uint8Array): void {
  let carry = 0;
  for (let i = 0; i < 16; i++) {
    const next = (t[i] ?? 0) >> 7;
    t[i] = (((t[i] ?? 0) << 1) | carry) & 0xff;
    carry = next;
  }
  if (carry) t[0] = (t[0] ?? 0) ^ 0x87;
}

/**
 * XTS-AES-256 of `data` (whole data units of `dataUnit` bytes, numbered
 * from `first`) through OpenSSL's AES.
 */
export async function referenceXts(
  key: Uint8Array,
  data: Uint8Array,
  dataUnit: number,
  first: number,
  decrypt: boolean,
): Promise<Uint8Array> {
  const units = data.length / dataUnit;
  const numbers = new Uint8Array(16 * units);
  for (let u = 0; u < units; u++) {
    let n = first + u;
    for (let b = 0; b < 8; b++) {
      numbers[16 * u + b] = n % 256;
      n = Math.floor(n / 256);
    }
  }
  const t0 = await ecb(key.subarray(32), numbers, false);
  const tweaks = new Uint8Array(data.length);
  for (let u = 0; u < units; u++) {
    const t = t0.slice(16 * u, 16 * u + 16);
    for (let b = 0; b < dataUnit / 16; b++) {
      tweaks.set(t, u * dataUnit + 16 * b);
      mulAlpha(t);
    }
  }
  const whitened = data.map((v, i) => v ^ (tweaks[i] ?? 0));
  const out = await ecb(key.subarray(0, 32), whitened, decrypt);
  return out.map((v, i) => v ^ (tweaks[i] ?? 0));
}
