/**
 * The last lines the appliance logged, for the admin's Logs page. Only the
 * operational log goes in (connections, errors, RPC effects); the one-time
 * admin password is printed to the console directly and never lands here.
 * @module
 */

/** One logged line. */
export interface LogLine {
  /** Milliseconds since the epoch. */
  t: number;
  msg: string;
}

/** A fixed-size ring of log lines; the oldest go first. */
export class LogRing {
  readonly capacity: number;
  readonly #lines: LogLine[] = [];
  #next = 0;

  constructor(capacity = 1000) {
    this.capacity = capacity;
  }

  /** Adds a line (control path; one object per line). */
  push(msg: string, t = Date.now()): void {
    const line = { t, msg: msg.length > 2000 ? `${msg.slice(0, 2000)}…` : msg };
    if (this.#lines.length < this.capacity) this.#lines.push(line);
    else this.#lines[this.#next] = line;
    this.#next = (this.#next + 1) % this.capacity;
  }

  /** Lines oldest first, those containing `filter` (case-insensitive) when given. */
  lines(filter?: string): LogLine[] {
    const all = this.#lines.length < this.capacity
      ? [...this.#lines]
      : [...this.#lines.slice(this.#next), ...this.#lines.slice(0, this.#next)];
    if (filter === undefined || filter === "") return all;
    const f = filter.toLowerCase();
    return all.filter((l) => l.msg.toLowerCase().includes(f));
  }
}
