/**
 * Who may use the web admin: one admin password (set at first start,
 * printed once, stored only as a PBKDF2 hash), browser sessions with a
 * CSRF token each, bearer tokens for scripts (stored only as SHA-256
 * hashes), and a limit on failed logins. The state lives in
 * `<state-dir>/admin.json`, mode 0600; nothing here ever logs or returns a
 * password or token except the one-time values handed to their creator.
 * @module
 */
import { timingSafeEqual } from "node:crypto";

/** A PBKDF2-HMAC-SHA-256 password hash (RFC 8018). */
interface PasswordHash {
  alg: "pbkdf2-sha256";
  iterations: number;
  salt: string;
  hash: string;
}

/** A bearer token as stored: its hash, never the token. */
interface TokenRecord {
  id: string;
  name: string;
  sha256: string;
  created: string;
}

/** The content of admin.json. */
interface AdminFile {
  version: 1;
  password: PasswordHash;
  tokens: TokenRecord[];
}

/** A token as listed to the admin (no secret). */
export interface TokenInfo {
  id: string;
  name: string;
  created: string;
}

/** A logged-in browser. */
export interface Session {
  readonly id: string;
  /** Sent back by the page in forms (`_csrf`) and the `X-CSRF-Token` header. */
  readonly csrf: string;
  readonly createdMs: number;
  lastSeenMs: number;
}

/** Options of {@link AdminAuth.open}. */
export interface AdminAuthOptions {
  /** PBKDF2 iterations for new hashes (default 310000, OWASP's figure for SHA-256). */
  iterations?: number;
  /** Clock (ms); tests move it. */
  now?: () => number;
  /** A session ends after this long without a request (default 1 h). */
  sessionIdleMs?: number;
  /** ... and this long after login in any case (default 12 h). */
  sessionMaxMs?: number;
  /** Failed logins allowed per client address per window (default 5). */
  maxFailures?: number;
  /** Failed logins allowed from all addresses together per window (default 30). */
  maxFailuresGlobal?: number;
  /** The window of the login limit (default 60 s). */
  failureWindowMs?: number;
  /** Make the file with a new password when it is missing (default true; the CLI says no). */
  create?: boolean;
}

/** Why admin.json was refused. */
export class AdminFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AdminFileError";
  }
}

const DEFAULT_ITERATIONS = 310_000;
const MAX_SESSIONS = 64;
const MAX_TOKENS = 64;
const MIN_PASSWORD = 12;
const MAX_PASSWORD = 1024;
/** Client addresses whose failed logins are remembered at once. */
const MAX_TRACKED_ADDRESSES = 10_000;

function b64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function fromB64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s.replaceAll("-", "+").replaceAll("_", "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** `n` random bytes as base64url. */
export function randomToken(n = 32): string {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function pbkdf2(
  password: string,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(password),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    key,
    256,
  );
  return new Uint8Array(bits);
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Compares two strings in time independent of where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const enc = new TextEncoder();
  return sameBytes(enc.encode(a), enc.encode(b));
}

/** Refuses a new password that is too short or too long; returns the reason. */
export function passwordProblem(pw: string): string | null {
  if (pw.length < MIN_PASSWORD) return `the password must have at least ${MIN_PASSWORD} characters`;
  if (pw.length > MAX_PASSWORD) return `the password must have at most ${MAX_PASSWORD} characters`;
  return null;
}

function validFile(v: unknown): v is AdminFile {
  if (typeof v !== "object" || v === null) return false;
  const f = v as Record<string, unknown>;
  const p = f["password"] as Record<string, unknown> | undefined;
  return f["version"] === 1 && typeof p === "object" && p !== null &&
    p["alg"] === "pbkdf2-sha256" && Number.isInteger(p["iterations"]) &&
    (p["iterations"] as number) >= 1000 && typeof p["salt"] === "string" &&
    typeof p["hash"] === "string" && Array.isArray(f["tokens"]) &&
    (f["tokens"] as unknown[]).every((t) => {
      const r = t as Record<string, unknown>;
      return typeof r === "object" && r !== null && typeof r["id"] === "string" &&
        typeof r["name"] === "string" && typeof r["sha256"] === "string" &&
        typeof r["created"] === "string";
    });
}

/** The admin's credentials, sessions and login limits. */
export class AdminAuth {
  readonly path: string;
  #file: AdminFile;
  /** Which version of the file #file is (inode, mtime, size). */
  #version = "";
  readonly #iterations: number;
  readonly #now: () => number;
  readonly #idleMs: number;
  readonly #maxMs: number;
  readonly #maxFailures: number;
  readonly #maxFailuresGlobal: number;
  readonly #windowMs: number;
  readonly #sessions = new Map<string, Session>();
  /** Failure times per client address, and for all together under "". */
  readonly #failures = new Map<string, number[]>();

  private constructor(path: string, file: AdminFile, opts: AdminAuthOptions) {
    this.path = path;
    this.#file = file;
    this.#iterations = opts.iterations ?? DEFAULT_ITERATIONS;
    this.#now = opts.now ?? Date.now;
    this.#idleMs = opts.sessionIdleMs ?? 3600_000;
    this.#maxMs = opts.sessionMaxMs ?? 12 * 3600_000;
    this.#maxFailures = opts.maxFailures ?? 5;
    this.#maxFailuresGlobal = opts.maxFailuresGlobal ?? 30;
    this.#windowMs = opts.failureWindowMs ?? 60_000;
  }

  /**
   * Loads `path`, or creates it with a random password, returned once as
   * `initialPassword` for the console (it is stored only hashed).
   */
  static async open(
    path: string,
    opts: AdminAuthOptions = {},
  ): Promise<{ auth: AdminAuth; initialPassword?: string }> {
    const loaded = await readAdminFile(path);
    if (loaded !== null) {
      const auth = new AdminAuth(path, loaded.file, opts);
      auth.#version = loaded.version;
      return { auth };
    }
    if (opts.create === false) {
      throw new AdminFileError(`${path} does not exist: start sluice serve once to make it`);
    }
    // 18 random bytes: 24 characters, 144 bits; no look-alike problem in base64url.
    const initialPassword = randomToken(18);
    const auth = new AdminAuth(path, {
      version: 1,
      password: await hashPassword(initialPassword, opts.iterations ?? DEFAULT_ITERATIONS),
      tokens: [],
    }, opts);
    await auth.#save();
    return { auth, initialPassword };
  }

  async #save(): Promise<void> {
    // Write then rename: a crash leaves the old file or the new one, never half of one.
    const tmp = `${this.path}.tmp.${Deno.pid}`;
    await Deno.writeTextFile(tmp, JSON.stringify(this.#file, null, 2) + "\n", { mode: 0o600 });
    await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, this.path);
    this.#version = fileVersion(await Deno.stat(this.path));
  }

  /**
   * Takes in changes another process made to the file (`sluice admin-token`
   * adding or revoking a token): one stat per call, a read only when it
   * changed. A file that became unreadable or invalid is ignored: the last
   * good copy stays in force.
   */
  async refresh(): Promise<void> {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(this.path);
    } catch {
      return;
    }
    if (fileVersion(st) === this.#version) return;
    try {
      const loaded = await readAdminFile(this.path);
      if (loaded !== null) {
        this.#file = loaded.file;
        this.#version = loaded.version;
      }
    } catch { /* keep the last good copy */ }
  }

  /** Is `password` the admin password? */
  async verifyPassword(password: string): Promise<boolean> {
    const p = this.#file.password;
    if (password.length > MAX_PASSWORD) return false;
    return sameBytes(await pbkdf2(password, fromB64(p.salt), p.iterations), fromB64(p.hash));
  }

  /** Replaces the password and ends every session but `keep`. */
  async setPassword(password: string, keep?: string): Promise<void> {
    const problem = passwordProblem(password);
    if (problem !== null) throw new Error(problem);
    await this.refresh();
    this.#file = { ...this.#file, password: await hashPassword(password, this.#iterations) };
    await this.#save();
    for (const id of [...this.#sessions.keys()]) if (id !== keep) this.#sessions.delete(id);
  }

  // --- bearer tokens --------------------------------------------------------

  /** Makes a token; the returned `token` is shown once and stored only hashed. */
  async createToken(name: string): Promise<{ id: string; token: string }> {
    if (!/^[A-Za-z0-9 _.:-]{1,64}$/.test(name)) {
      throw new Error("a token name is 1-64 letters, digits, spaces and _ . : -");
    }
    await this.refresh();
    if (this.#file.tokens.length >= MAX_TOKENS) throw new Error(`at most ${MAX_TOKENS} tokens`);
    // Hex, not base64url: an id is typed on command lines (`sluice admin-token revoke ID`),
    // and a base64url one starting with "-" read as an option (1 in 64 ids).
    const id = Array.from(
      crypto.getRandomValues(new Uint8Array(6)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const token = `sluice_${randomToken(32)}`;
    const rec: TokenRecord = {
      id,
      name,
      sha256: b64url(await sha256(token)),
      created: new Date(this.#now()).toISOString(),
    };
    this.#file = { ...this.#file, tokens: [...this.#file.tokens, rec] };
    await this.#save();
    return { id, token };
  }

  /** Tokens without their secrets. */
  listTokens(): TokenInfo[] {
    return this.#file.tokens.map(({ id, name, created }) => ({ id, name, created }));
  }

  /** Removes a token; false when there was none with that id. */
  async revokeToken(id: string): Promise<boolean> {
    await this.refresh();
    const tokens = this.#file.tokens.filter((t) => t.id !== id);
    if (tokens.length === this.#file.tokens.length) return false;
    this.#file = { ...this.#file, tokens };
    await this.#save();
    return true;
  }

  /** Is `token` a live bearer token? */
  async verifyToken(token: string): Promise<boolean> {
    if (token.length > 200) return false;
    const h = await sha256(token);
    let ok = false;
    // Look at every record: the time taken does not tell which one matched.
    for (const t of this.#file.tokens) if (sameBytes(h, fromB64(t.sha256))) ok = true;
    return ok;
  }

  // --- sessions --------------------------------------------------------------

  /** Starts a session after a successful login. */
  createSession(): Session {
    const now = this.#now();
    this.#expire(now);
    if (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = [...this.#sessions.values()].sort((a, b) => a.lastSeenMs - b.lastSeenMs)[0];
      if (oldest !== undefined) this.#sessions.delete(oldest.id);
    }
    const s: Session = {
      id: randomToken(32),
      csrf: randomToken(32),
      createdMs: now,
      lastSeenMs: now,
    };
    this.#sessions.set(s.id, s);
    return s;
  }

  /** The live session with this cookie value, touched; undefined when none. */
  session(id: string | undefined): Session | undefined {
    if (id === undefined) return undefined;
    const now = this.#now();
    this.#expire(now);
    const s = this.#sessions.get(id);
    if (s !== undefined) s.lastSeenMs = now;
    return s;
  }

  /** Ends a session (logout). */
  endSession(id: string): void {
    this.#sessions.delete(id);
  }

  #expire(now: number): void {
    for (const [id, s] of this.#sessions) {
      if (now - s.lastSeenMs > this.#idleMs || now - s.createdMs > this.#maxMs) {
        this.#sessions.delete(id);
      }
    }
  }

  // --- login limits ------------------------------------------------------------

  /** Seconds until `addr` may try again; 0 when it may now. */
  loginRetryAfterS(addr: string): number {
    const now = this.#now();
    let wait = 0;
    for (const [key, max] of [[addr, this.#maxFailures], ["", this.#maxFailuresGlobal]] as const) {
      const times = this.#recent(key, now);
      if (times.length >= max) {
        wait = Math.max(wait, (times[times.length - max] as number) + this.#windowMs - now);
      }
    }
    return Math.ceil(wait / 1000);
  }

  /** Records a failed login from `addr`. */
  loginFailed(addr: string): void {
    const now = this.#now();
    for (const [key, max] of [[addr, this.#maxFailures], ["", this.#maxFailuresGlobal]] as const) {
      const times = this.#recent(key, now);
      times.push(now);
      // Only the last `max` matter to the limit: older ones need not be kept.
      if (times.length > max) times.splice(0, times.length - max);
      this.#failures.set(key, times);
    }
    if (this.#failures.size > MAX_TRACKED_ADDRESSES) {
      // Bound the memory an address-spraying client can make us hold: forget addresses
      // whose failures are all outside the window; if all are recent, the oldest-inserted.
      for (const [k, v] of this.#failures) {
        if (k !== "" && (v[v.length - 1] ?? 0) <= now - this.#windowMs) this.#failures.delete(k);
      }
      for (const k of this.#failures.keys()) {
        // Down to 90%: the walk above then runs once per thousand new addresses, not each time.
        if (this.#failures.size <= MAX_TRACKED_ADDRESSES * 0.9) break;
        if (k !== "") this.#failures.delete(k);
      }
    }
  }

  /** How many client addresses the login limit remembers (tests; the global count excluded). */
  trackedAddresses(): number {
    return this.#failures.size - (this.#failures.has("") ? 1 : 0);
  }

  /** Forgets the failures of `addr` after it logged in. */
  loginSucceeded(addr: string): void {
    this.#failures.delete(addr);
  }

  #recent(key: string, now: number): number[] {
    const times = (this.#failures.get(key) ?? []).filter((t) => now - t < this.#windowMs);
    if (times.length === 0) this.#failures.delete(key);
    else this.#failures.set(key, times);
    return times;
  }
}

/** Identifies one version of the file: rename makes a new inode, writes change mtime/size. */
function fileVersion(st: Deno.FileInfo): string {
  return `${st.ino ?? 0}:${st.mtime?.getTime() ?? 0}:${st.size}`;
}

/** Reads and checks admin.json; null when it does not exist. */
async function readAdminFile(
  path: string,
): Promise<{ file: AdminFile; version: string } | null> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  if (st.mode !== null && (st.mode & 0o077) !== 0) {
    throw new AdminFileError(
      `${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
    );
  }
  const text = await Deno.readTextFile(path);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new AdminFileError(`${path} is not valid JSON`);
  }
  if (!validFile(parsed)) throw new AdminFileError(`${path} is not a sluice admin file`);
  return { file: parsed, version: fileVersion(st) };
}

async function hashPassword(password: string, iterations: number): Promise<PasswordHash> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  return {
    alg: "pbkdf2-sha256",
    iterations,
    salt: b64url(salt),
    hash: b64url(await pbkdf2(password, salt, iterations)),
  };
}
