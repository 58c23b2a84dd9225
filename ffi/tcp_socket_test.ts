import { assert, assertEquals, assertRejects, assertThrows } from "../src/testing/assert.ts";
import { ErrnoError } from "./errno.ts";
import { close, sym } from "./libc.ts";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  encodeSockaddr,
  formatIPv6,
  getNoDelay,
  getReceiveBufferSize,
  getSendBufferSize,
  localAddress,
  parseIPv4,
  parseIPv6,
  peerAddress,
  setNoDelay,
  setReceiveBufferSize,
  setSendBufferSize,
  tcpConnect,
  tcpListen,
} from "./tcp_socket.ts";

Deno.test("tcp_socket: IPv4 parse and sockaddr_in round trip", () => {
  assertEquals(parseIPv4("10.0.255.1"), new Uint8Array([10, 0, 255, 1]));
  for (const bad of ["1.2.3", "1.2.3.256", "01.2.3.4", "a.b.c.d", "1.2.3.4.5", ""]) {
    assertEquals(parseIPv4(bad), null, bad);
  }
  const sa = encodeSockaddr("192.168.1.20", 4420);
  assertEquals(sa.family, AF_INET);
  assertEquals(sa.length, 16);
  // family 2 (LE), port 4420 = 0x1144 big-endian, address bytes.
  assertEquals(sa.bytes.subarray(0, 8), new Uint8Array([2, 0, 0x11, 0x44, 192, 168, 1, 20]));
  assertEquals(decodeSockaddr(sa.bytes), { family: AF_INET, host: "192.168.1.20", port: 4420 });
  assertEquals(decodeSockaddr(encodeSockaddr("localhost", 1).bytes).host, "127.0.0.1");
  assertEquals(decodeSockaddr(encodeSockaddr("", 1).bytes).host, "0.0.0.0");
  assertThrows(() => encodeSockaddr("example.com", 80), RangeError, "not a numeric");
  assertThrows(() => encodeSockaddr("127.0.0.1", 65536), RangeError, "0..65535");
});

Deno.test("tcp_socket: IPv6 parse, RFC 5952 format and sockaddr_in6 round trip", () => {
  const cases: [string, string][] = [
    ["::1", "::1"],
    ["::", "::"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"], // the longest zero run wins
    ["fe80::1:2", "fe80::1:2"],
    ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"], // a single zero group is not "::"
    ["::ffff:10.1.2.3", "::ffff:10.1.2.3"],
  ];
  for (const [text, canonical] of cases) {
    const b = parseIPv6(text);
    assert(b !== null, text);
    assertEquals(formatIPv6(b), canonical, text);
  }
  for (const bad of ["1::2::3", ":::", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3", "g::1"]) {
    assertEquals(parseIPv6(bad), null, bad);
  }
  const sa = encodeSockaddr("[2001:db8::7]", 8009);
  assertEquals(sa.family, AF_INET6);
  assertEquals(sa.length, 28);
  assertEquals(decodeSockaddr(sa.bytes), { family: AF_INET6, host: "2001:db8::7", port: 8009 });
});

Deno.test("tcp_socket: listen on port 0 reads the bound port back; connect; names", async () => {
  const l = tcpListen("127.0.0.1", 0);
  try {
    assert(l.port > 0);
    assertEquals(l.address, `127.0.0.1:${l.port}`);
    assertEquals(localAddress(l.fd), l.address);
    const fd = await tcpConnect("127.0.0.1", l.port);
    try {
      assertEquals(peerAddress(fd), l.address);
      assert(getNoDelay(fd), "TCP_NODELAY is on by default");
      setNoDelay(fd, false);
      assert(!getNoDelay(fd));
      setSendBufferSize(fd, 64 * 1024);
      setReceiveBufferSize(fd, 64 * 1024);
      // Linux keeps twice the value asked (its bookkeeping), within limits.
      assert(getSendBufferSize(fd) >= 64 * 1024, `SO_SNDBUF ${getSendBufferSize(fd)}`);
      assert(getReceiveBufferSize(fd) >= 64 * 1024);
      const accepted = sym.accept4(l.fd, null, null, 0);
      assert(accepted >= 0);
      assertEquals(peerAddress(accepted), localAddress(fd));
      close(accepted);
    } finally {
      close(fd);
    }
  } finally {
    close(l.fd);
  }
});

Deno.test("tcp_socket: EADDRINUSE names the port; ECONNREFUSED names the address", async () => {
  const l = tcpListen("127.0.0.1", 0);
  try {
    const e = assertThrows(
      () => tcpListen("127.0.0.1", l.port, 16, { reuseAddress: false }),
      ErrnoError,
      `port ${l.port}`,
    );
    assertEquals(e.code, "EADDRINUSE");
  } finally {
    close(l.fd);
  }
  // The port is free now: nothing listens there.
  const refused = await assertRejects(
    () => tcpConnect("127.0.0.1", l.port),
    ErrnoError,
    `127.0.0.1:${l.port}`,
  );
  assertEquals(refused.code, "ECONNREFUSED");
});

Deno.test("tcp_socket: IPv6 loopback when the host has it", async () => {
  let l;
  try {
    l = tcpListen("::1", 0);
  } catch (e) {
    if (
      e instanceof ErrnoError && (e.code === "EADDRNOTAVAIL" || e.errno === 99 || e.errno === 97)
    ) {
      return; // no IPv6 on this host
    }
    throw e;
  }
  try {
    assertEquals(l.address, `[::1]:${l.port}`);
    const fd = await tcpConnect("[::1]", l.port);
    assertEquals(peerAddress(fd), l.address);
    close(fd);
  } finally {
    close(l.fd);
  }
});
