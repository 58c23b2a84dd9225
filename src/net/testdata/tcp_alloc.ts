/**
 * Helper for tcp_test.ts: a QD32 echo of 64-byte messages through
 * TcpConnection under `--v8-flags=--trace-gc`, the measured stretch
 * bracketed by markers on glibc's stdout (the stream V8's GC trace uses, so
 * the order is exact).
 *
 * Argument: "steady" (the data path as is) or "copy" (a control whose
 * client copies each message with `slice`, proving the trace sees
 * per-message allocation).
 * @module
 */
import { Reactor } from "../../reactor/reactor.ts";
import { connectTcp, TcpConnection, TcpListener } from "../tcp.ts";
import { gcMarker } from "../../testing/gc_trace.ts";

const { mark, close: closeMarker } = gcMarker();

const copy = Deno.args[0] === "copy";
const WARMUP = 200_000;
const MEASURED = 400_000;

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
const message = new Uint8Array(64);
let echoed = 0;
let sink = 0;
let phase = 0;
let done: () => void = () => {};
const finished = new Promise<void>((r) => (done = r));
const client: TcpConnection = await connectTcp(reactor, "127.0.0.1", listener.port, {
  onData(buffer, length) {
    const n = length >>> 6; // 64-byte messages; the echo keeps them whole here
    if (copy) { for (let i = 0; i < n; i++) sink += buffer.slice(i << 6, (i + 1) << 6).byteLength; }
    echoed += n;
    if (phase === 0 && echoed >= WARMUP) {
      phase = 1;
      mark("MEASURE-BEGIN");
    } else if (phase === 1 && echoed >= WARMUP + MEASURED) {
      phase = 2;
      mark("MEASURE-END");
      done();
    }
    if (phase < 2) { for (let i = 0; i < n; i++) client.send(message); }
    return n << 6;
  },
});
reactor.ioInFlight++;
for (let i = 0; i < 32; i++) client.send(message);
await finished;
reactor.ioInFlight--;
client.close();
await client.whenClosed;
await listener.close();
await reactor.stop();
await running;
reactor.close();
closeMarker();
if (sink < 0) console.log(sink);
