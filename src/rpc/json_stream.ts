/**
 * Splits a byte stream into top-level JSON values. SPDK's rpc.py sends
 * pretty-printed requests one after another with no framing, so requests
 * are found by tracking nesting depth outside strings; newline-delimited
 * input works too.
 * @module
 */

/** Thrown when a single value grows past the limit. */
export class JsonTooLargeError extends Error {
  constructor(limit: number) {
    super(`request larger than ${limit} bytes`);
    this.name = "JsonTooLargeError";
  }
}

/** Feeds chunks in, yields complete JSON texts out. */
export class JsonStreamSplitter {
  readonly #limit: number;
  #buf = "";
  #depth = 0;
  #inString = false;
  #escape = false;
  /** Index in #buf up to which the scanner has looked. */
  #scanned = 0;
  /** Start of the current value in #buf, or -1 between values. */
  #start = -1;
  readonly #decoder = new TextDecoder();

  constructor(limitBytes = 16 * 1024 * 1024) {
    this.#limit = limitBytes;
  }

  /** Adds bytes; returns the JSON texts completed by them. */
  push(chunk: Uint8Array): string[] {
    this.#buf += this.#decoder.decode(chunk, { stream: true });
    const out: string[] = [];
    const s = this.#buf;
    for (let i = this.#scanned; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (this.#start < 0) {
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
        this.#start = i;
        if (c !== 0x7b && c !== 0x5b) {
          // Not an object or array: hand the rest over so the parse error
          // names it; the server answers and drops the connection.
          out.push(s.slice(i));
          this.#buf = "";
          this.#scanned = 0;
          this.#start = -1;
          return out;
        }
      }
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (c === 0x5c) this.#escape = true;
        else if (c === 0x22) this.#inString = false;
        continue;
      }
      if (c === 0x22) this.#inString = true;
      else if (c === 0x7b || c === 0x5b) this.#depth++;
      else if (c === 0x7d || c === 0x5d) {
        this.#depth--;
        if (this.#depth === 0) {
          out.push(s.slice(this.#start, i + 1));
          this.#start = -1;
        }
      }
    }
    // Keep only the unfinished value.
    if (this.#start < 0) {
      this.#buf = "";
      this.#scanned = 0;
    } else {
      this.#buf = s.slice(this.#start);
      this.#scanned = this.#buf.length;
      this.#start = 0;
      if (this.#buf.length > this.#limit) throw new JsonTooLargeError(this.#limit);
    }
    return out;
  }
}
