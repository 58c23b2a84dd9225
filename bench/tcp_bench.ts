/**
 * TCP echo round trips (a measurement, not a test): sluice's reactor-driven
 * TcpConnection beside Deno's own `Deno.listen`/`Deno.connect`, in the same
 * process, one after the other, on 127.0.0.1.
 *
 * Each run has one client and one echo server in this process (one JS
 * thread serves both ends, the same for both peers), messages of `size`
 * bytes, `depth` messages in flight on the one connection. A round trip is
 * one message echoed back in full.
 *
 * - sluice: the server echoes zero-copy (sends from its receive buffer,
 *   pauses receiving until the send is done); the client keeps `depth`
 *   messages queued, and replacements queued in one onData leave in one
 *   SENDMSG. The client counts itself in `reactor.ioInFlight` while it has
 *   messages outstanding, as an initiator does (the reactor keeps polling
 *   rather than parking between a request and its answer). A second sluice
 *   row at QD1 leaves that out, so the reactor may park between round trips.
 * - Deno: the server loops `read` then `write` of what it read; the client
 *   writes replacements for all messages completed by one `read` in one
 *   `write` (the best a Deno client can do; writing each message apart is
 *   slower).
 *
 * Run: `deno run -A bench/tcp_bench.ts [--seconds N]`.
 * @module
 */
import { cpuUsage } from "node:process";
import { Reactor } from "../src/reactor/mod.ts";
import { connectTcp, TcpConnection, TcpListener } from "../src/net/mod.ts";

/** One measured configuration. */
export interface TcpBenchRow {
  /** "sluice", "sluice (may park)" or "deno". */
  peer: string;
  /** Message size in bytes. */
  size: number;
  /** Messages in flight. */
  depth: number;
  /** Round trips (messages echoed) per second. */
  roundTripsPerS: number;
  /** Payload throughput one way, MB/s. */
  mbPerS: number;
  /** Process CPU in user space per round trip, microseconds (both ends together). */
  userUsPerRoundTrip: number;
  /** Process CPU in the kernel per round trip, microseconds (both ends together). */
  sysUsPerRoundTrip: number;
}

/** Round trips counted over the measured window and the CPU the process used meanwhile. */
export interface EchoMeasurement {
  roundTripsPerS: number;
  userUsPerRoundTrip: number;
  sysUsPerRoundTrip: number;
}

/** Runs `sleep(ms)` and reports the round trips `count()` advanced by, with CPU per round trip. */
async function measure(count: () => number, seconds: number): Promise<EchoMeasurement> {
  const d0 = count();
  const c0 = cpuUsage();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const n = count() - d0;
  const cpu = cpuUsage(c0);
  const t1 = performance.now();
  return {
    roundTripsPerS: n / ((t1 - t0) / 1000),
    userUsPerRoundTrip: n > 0 ? cpu.user / n : 0,
    sysUsPerRoundTrip: n > 0 ? cpu.system / n : 0,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Round trips per second through sluice's TcpConnection on one reactor. */
export async function sluiceEcho(
  size: number,
  depth: number,
  seconds: number,
  countInFlight = true,
): Promise<EchoMeasurement> {
  const reactor = new Reactor();
  const running = reactor.run();
  const serverConns: TcpConnection[] = [];
  const listener = new TcpListener(reactor, {
    host: "127.0.0.1",
    port: 0,
    onConnection(fd, peer) {
      const conn: TcpConnection = new TcpConnection(reactor, fd, {
        peer,
        onData(buffer, length) {
          conn.sendRange(buffer, 0, length);
          conn.pauseReceive();
          return length;
        },
        onSent: () => conn.resumeReceive(),
      });
      serverConns.push(conn);
    },
  });
  const message = new Uint8Array(size).fill(0x5a);
  let stopping = false;
  let sent = 0;
  let received = 0;
  let done = 0;
  let finished: () => void = () => {};
  const allBack = new Promise<void>((r) => (finished = r));
  const client = await connectTcp(reactor, "127.0.0.1", listener.port, {
    sendQueueEntries: Math.max(64, depth * 2),
    onData(_buffer, length) {
      received += length;
      const now = Math.floor(received / size);
      let more = now - done;
      done = now;
      if (stopping) {
        if (done === sent) finished();
        return length;
      }
      // The same read-only message may be queued many times over.
      while (more-- > 0) {
        client.send(message);
        sent++;
      }
      return length;
    },
  });
  if (countInFlight) reactor.ioInFlight++;
  for (let i = 0; i < depth; i++) client.send(message);
  sent = depth;
  await sleep(200); // warm-up
  const m = await measure(() => done, seconds);
  stopping = true;
  if (done < sent) await allBack;
  if (countInFlight) reactor.ioInFlight--;
  client.close();
  await client.whenClosed;
  await listener.close();
  await reactor.stop();
  await running;
  reactor.close();
  return m;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.byteLength) at += await conn.write(bytes.subarray(at));
}

/** Round trips per second through Deno.listen / Deno.connect. */
export async function denoEcho(
  size: number,
  depth: number,
  seconds: number,
): Promise<EchoMeasurement> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(256 * 1024);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            await writeAll(conn, buf.subarray(0, n));
          }
        } catch {
          // the client went away
        } finally {
          try {
            conn.close();
          } catch {
            // already closed
          }
        }
      })();
    }
  })();
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  client.setNoDelay(true);
  const batch = new Uint8Array(size * depth).fill(0x5a);
  const rbuf = new Uint8Array(256 * 1024);
  let stopping = false;
  let sent = depth;
  let received = 0;
  let done = 0;
  const loop = (async () => {
    await writeAll(client, batch);
    for (;;) {
      const n = await client.read(rbuf);
      if (n === null) throw new Error("deno echo: server closed");
      received += n;
      const now = Math.floor(received / size);
      const more = now - done;
      done = now;
      if (stopping) {
        if (done === sent) return;
        continue;
      }
      if (more > 0) {
        sent += more;
        await writeAll(client, batch.subarray(0, more * size));
      }
    }
  })();
  await sleep(200); // warm-up
  const m = await measure(() => done, seconds);
  stopping = true;
  await loop;
  client.close();
  listener.close();
  await serving.catch(() => {});
  return m;
}

/** Measures every configuration and returns the rows (sluice and Deno side by side). */
export async function runTcpBench(seconds = 2): Promise<TcpBenchRow[]> {
  const rows: TcpBenchRow[] = [];
  const row = (peer: string, size: number, depth: number, m: EchoMeasurement) =>
    rows.push({ peer, size, depth, ...m, mbPerS: (m.roundTripsPerS * size) / 1e6 });
  for (const size of [64, 4096]) {
    for (const depth of [1, 32]) {
      row("sluice", size, depth, await sluiceEcho(size, depth, seconds));
      if (depth === 1) {
        row("sluice (may park)", size, depth, await sluiceEcho(size, 1, seconds, false));
      }
      row("deno", size, depth, await denoEcho(size, depth, seconds));
    }
  }
  return rows;
}

/** Prints rows as a table with the sluice/deno ratio per configuration. */
export function printTcpBench(rows: TcpBenchRow[]): void {
  const header = [
    "peer",
    "size",
    "QD",
    "round trips/s",
    "MB/s",
    "vs deno",
    "user us/RT",
    "sys us/RT",
  ];
  const cells = [header];
  for (const r of rows) {
    const deno = rows.find((d) => d.peer === "deno" && d.size === r.size && d.depth === r.depth);
    const ratio = deno !== undefined && deno.roundTripsPerS > 0
      ? `${(r.roundTripsPerS / deno.roundTripsPerS).toFixed(2)}x`
      : "n/a";
    cells.push([
      r.peer,
      String(r.size),
      String(r.depth),
      r.roundTripsPerS.toFixed(0),
      r.mbPerS.toFixed(1),
      ratio,
      r.userUsPerRoundTrip.toFixed(2),
      r.sysUsPerRoundTrip.toFixed(2),
    ]);
  }
  const widths = header.map((_, i) => Math.max(...cells.map((c) => (c[i] ?? "").length)));
  for (const [n, c] of cells.entries()) {
    console.log(
      c.map((v, i) => (i === 0 ? v.padEnd(widths[i] ?? 0) : v.padStart(widths[i] ?? 0))).join("  "),
    );
    if (n === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--seconds");
  const seconds = i >= 0 ? Number(Deno.args[i + 1]) : 2;
  console.log(`TCP echo on 127.0.0.1, client and server in one process, ${seconds} s per row\n`);
  printTcpBench(await runTcpBench(seconds));
}
