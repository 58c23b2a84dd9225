/**
 * The crypto key store: named AES-256-XTS keys in memory only (SPDK's
 * accel crypto keys). Key bytes never leave it: listings show names and
 * ciphers, errors never quote key material, `save_config` refers to keys by
 * name. A key is zeroed when destroyed; one that a crypto bdev uses cannot
 * be destroyed.
 *
 * Keys reach the store through `accel_crypto_key_create` or a key file
 * (default `<state-dir>/keys.json`, read at start-up before the config):
 *
 * ```json
 * {"keys": [{"name": "key0", "cipher": "AES_XTS", "key": "<64 hex digits>", "key2": "<64 hex digits>"}]}
 * ```
 *
 * The file must be a regular file owned by the appliance's user with no
 * group or other permissions (mode 0600 or stricter), as ssh and SPDK's
 * keyring_file demand; anything looser is refused.
 * @module
 */
import { BdevBusyError, BdevError, BdevInvalidError } from "../bdev/errors.ts";
import { checkXtsKey, createNativeXtsEngine } from "./native_xts.ts";
import type { XtsEngine, XtsKey } from "./xts.ts";

/** The ciphers a key can be for; SPDK also has AES_CBC, which sluice does not implement. */
export const CRYPTO_CIPHERS = ["AES_XTS"] as const;
/** A value of {@link CRYPTO_CIPHERS}. */
export type CryptoCipher = typeof CRYPTO_CIPHERS[number];

const KEY_NAME_RE = /^[A-Za-z0-9_.:+-]{1,128}$/;
const HEX_RE = /^[0-9a-fA-F]*$/;

interface Entry {
  name: string;
  cipher: CryptoCipher;
  /** key1 || key2, 64 bytes. Zeroed on destroy. */
  material: Uint8Array;
  /** Names of the crypto bdevs using the key. */
  users: Set<string>;
}

/** What `accel_crypto_keys_get` shows of a key: never its bytes. */
export interface CryptoKeyInfo {
  name: string;
  cipher: CryptoCipher;
  /** Tweak derivation, SPDK's name: the data-unit number (LBA) as is. */
  tweak_mode: "SIMPLE_LBA";
  /** The crypto bdevs using it. */
  users: string[];
}

/** How a key is given: hex strings, as SPDK's RPC takes them. */
export interface CryptoKeySpec {
  name: string;
  cipher: string;
  key: string;
  key2: string;
}

/**
 * The engine used for new keys until src/crypto/engines.ts (engine choice:
 * wasm, native, auto) lands: OpenSSL's. Throws when libcrypto is missing.
 */
export function defaultXtsEngine(): XtsEngine {
  const e = createNativeXtsEngine();
  if (e === null) {
    throw new BdevInvalidError(
      "no AES-XTS engine: libcrypto.so.3 (OpenSSL 3) is not installed on this machine",
    );
  }
  return e;
}

/** Parses a hex key half without ever quoting it in an error. */
function parseKeyHex(what: string, hex: unknown): Uint8Array {
  if (typeof hex !== "string" || !HEX_RE.test(hex)) {
    throw new BdevInvalidError(`"${what}" must be a string of hex digits`);
  }
  if (hex.length !== 64) {
    throw new BdevInvalidError(
      `"${what}" must be 64 hex digits (32 bytes: AES-256), got ${hex.length} digits`,
    );
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The named keys of one appliance. */
export class KeyStore {
  readonly #keys = new Map<string, Entry>();
  #engine: () => XtsEngine;

  /** `engine` gives the engine that loads keys for crypto bdevs. */
  constructor(engine: () => XtsEngine = defaultXtsEngine) {
    this.#engine = engine;
  }

  /**
   * Uses `engine` for crypto bdevs created from now on (the start-up choice
   * of src/crypto/engines.ts); bdevs that exist keep the engine they have.
   */
  setEngine(engine: XtsEngine): void {
    this.#engine = () => engine;
  }

  /** Is key `name` used by no crypto bdev (or absent)? */
  unused(name: string): boolean {
    return (this.#keys.get(name)?.users.size ?? 0) === 0;
  }

  /** The engine new crypto bdevs load their keys into. */
  engineName(): "wasm" | "native" {
    return this.#engine().name;
  }

  /** Adds a key; the halves must differ (XTS with key == key2 is refused, as FIPS 140-3 demands). */
  create(spec: CryptoKeySpec): void {
    if (typeof spec.name !== "string" || !KEY_NAME_RE.test(spec.name)) {
      throw new BdevInvalidError(
        `key name must be 1-128 letters, digits and _ . : + -, got ${JSON.stringify(spec.name)}`,
      );
    }
    if (spec.cipher !== "AES_XTS") {
      throw new BdevInvalidError(
        `cipher must be AES_XTS (AES-256-XTS), got ${JSON.stringify(spec.cipher)}`,
      );
    }
    if (this.#keys.has(spec.name)) {
      throw new BdevError(`A crypto key named "${spec.name}" already exists`, -17);
    }
    const k1 = parseKeyHex("key", spec.key);
    const k2 = parseKeyHex("key2", spec.key2);
    const material = new Uint8Array(64);
    material.set(k1, 0);
    material.set(k2, 32);
    k1.fill(0);
    k2.fill(0);
    try {
      checkXtsKey(material);
    } catch {
      material.fill(0);
      throw new BdevInvalidError(
        '"key" and "key2" must differ (the two XTS keys must be independent)',
      );
    }
    this.#keys.set(spec.name, { name: spec.name, cipher: "AES_XTS", material, users: new Set() });
  }

  /**
   * A copy of key `name`'s bytes (key1 || key2) for a data-path worker that
   * serves a replica of a crypto bdev (src/worker): a worker's isolate
   * cannot use this store. The caller zeroes the copy once it is handed over.
   */
  exportMaterial(name: string): Uint8Array {
    return this.#entry(name).material.slice();
  }

  /**
   * Adds key `name` from `material` (key1 || key2, 64 bytes), taking
   * ownership of it: the worker side of {@link exportMaterial}.
   */
  adoptMaterial(name: string, material: Uint8Array): void {
    if (material.byteLength !== 64) {
      material.fill(0);
      throw new BdevInvalidError(`crypto key "${name}": 64 bytes of key material expected`);
    }
    if (this.#keys.has(name)) {
      material.fill(0);
      throw new BdevError(`A crypto key named "${name}" already exists`, -17);
    }
    this.#keys.set(name, { name, cipher: "AES_XTS", material, users: new Set() });
  }

  /** Zeroes and removes a key; refused while a crypto bdev uses it. */
  destroy(name: string): void {
    const e = this.#entry(name);
    if (e.users.size > 0) {
      throw new BdevBusyError(
        `crypto key "${name}" is used by crypto bdev(s) ${
          [...e.users].map((u) => `"${u}"`).join(", ")
        }; delete them first`,
      );
    }
    e.material.fill(0);
    this.#keys.delete(name);
  }

  /** Does a key called `name` exist? */
  has(name: string): boolean {
    return this.#keys.has(name);
  }

  /** Key names and ciphers (one key, or all); never key bytes. */
  list(name?: string): CryptoKeyInfo[] {
    const all = name === undefined ? [...this.#keys.values()] : [this.#entry(name)];
    return all.map((e) => ({
      name: e.name,
      cipher: e.cipher,
      tweak_mode: "SIMPLE_LBA",
      users: [...e.users],
    }));
  }

  /**
   * Loads key `name` into the engine for crypto bdev `user` and records the
   * use; call {@link release} with the same names when the bdev goes.
   */
  acquire(name: string, user: string): XtsKey {
    const e = this.#entry(name);
    const key = this.#engine().createKey(e.material);
    e.users.add(user);
    return key;
  }

  /** Ends the use of key `name` by `user`. */
  release(name: string, user: string): void {
    this.#keys.get(name)?.users.delete(user);
  }

  /** Zeroes every key (shutdown). */
  clear(): void {
    for (const e of this.#keys.values()) e.material.fill(0);
    this.#keys.clear();
  }

  #entry(name: string): Entry {
    const e = this.#keys.get(name);
    if (e === undefined) {
      throw new BdevError(
        `No crypto key named "${name}" (create it with accel_crypto_key_create or put it in the key file)`,
        -19,
      );
    }
    return e;
  }
}

/** Refuses a key file that others could read or write, or that is not a plain file we own. */
export async function checkKeyFilePermissions(path: string): Promise<void> {
  const st = await Deno.lstat(path);
  if (!st.isFile) throw new BdevInvalidError(`key file ${path} is not a regular file`);
  const mode = (st.mode ?? 0) & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new BdevInvalidError(
      `key file ${path} has mode 0${
        mode.toString(8)
      }: group and others must have no access (chmod 600 ${path})`,
    );
  }
  const uid = Deno.uid();
  if (uid !== null && st.uid !== null && st.uid !== uid) {
    throw new BdevInvalidError(
      `key file ${path} is owned by uid ${st.uid}, not by this user (${uid})`,
    );
  }
}

/**
 * Loads every key of a key file into `store`; returns their names. All or
 * nothing: a bad entry leaves the store as it was. Errors name the file and
 * the entry, never key bytes.
 */
export async function loadKeyFile(store: KeyStore, path: string): Promise<string[]> {
  await checkKeyFilePermissions(path);
  const bytes = await Deno.readFile(path);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    // The parser's message may quote the text, key bytes included: do not pass it on.
    throw new BdevInvalidError(`key file ${path} is not valid JSON`);
  } finally {
    bytes.fill(0);
  }
  const keys = typeof doc === "object" && doc !== null && !Array.isArray(doc)
    ? (doc as Record<string, unknown>)["keys"]
    : undefined;
  if (!Array.isArray(keys)) {
    throw new BdevInvalidError(
      `key file ${path} must be {"keys": [{"name", "cipher", "key", "key2"}, ...]}`,
    );
  }
  const added: string[] = [];
  try {
    keys.forEach((k, i) => {
      if (typeof k !== "object" || k === null || Array.isArray(k)) {
        throw new BdevInvalidError(`keys[${i}] must be an object`);
      }
      const o = k as Record<string, unknown>;
      for (const f of Object.keys(o)) {
        if (!["name", "cipher", "key", "key2"].includes(f)) {
          throw new BdevInvalidError(`keys[${i}]: unknown field "${f}"`);
        }
      }
      store.create({
        name: o["name"] as string,
        cipher: (o["cipher"] ?? "AES_XTS") as string,
        key: o["key"] as string,
        key2: o["key2"] as string,
      });
      added.push(o["name"] as string);
    });
  } catch (e) {
    for (const n of added) store.destroy(n);
    throw new BdevInvalidError(`key file ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return added;
}
