import { assert, assertEquals } from "../../src/testing/assert.ts";
import { App } from "../../src/app.ts";
import type { StatsSnapshot } from "../../src/stats/stats.ts";
import {
  type Bucket,
  hostLines,
  intervalQuantileUs,
  latencyText,
  vmLines,
} from "./dashboard_js.ts";
import { APP_JS, dashboardPage } from "./pages.ts";

Deno.test("dashboard js: interval quantiles come from the difference of two cumulative histograms", () => {
  const prev: Bucket[] = [[10, 5], [100, 0], [1000, 0], [null, 0]];
  // 5 old samples in the first bucket; this second: 90 at <100 µs, 10 at <1000 µs.
  const now: Bucket[] = [[10, 5], [100, 90], [1000, 10], [null, 0]];
  assertEquals(intervalQuantileUs(prev, now, 0.5), 100);
  assertEquals(intervalQuantileUs(prev, now, 0.99), 1000);
  assertEquals(intervalQuantileUs(now, now, 0.5), null, "no I/O in the interval: no point");
  assertEquals(intervalQuantileUs([], [[10, 0], [null, 3]], 0.99), Infinity);
  assertEquals(latencyText(null), "-");
  assertEquals(latencyText(Infinity), "slow");
  assertEquals(latencyText(100), "< 100 \u00b5s");
  assertEquals(latencyText(2000), "< 2 ms");
  assertEquals(
    hostLines([{ nqn: "nqn.a", hostnqn: "nqn.h", cntlid: 3, io_queues: 2 }]),
    ["NVMe/TCP nqn.h on nqn.a (controller 3, 2 I/O queue(s))"],
  );
});

const VM = {
  ctrlr: "vm0",
  socket: "/x.sock",
  backend_specific: { block: { bdev: "L0", readonly: false, num_queues: 1 } },
};

Deno.test("dashboard js: the server-rendered host lines and the live ones say the same", () => {
  const page = dashboardPage(
    "t",
    { version: "x", uptime_s: 1 },
    [],
    1,
    0,
    [{
      nqn: "nqn.a",
      controllers: [{ cntlid: 3, hostnqn: "nqn.h", hostid: "id", num_io_qpairs: 2 }],
    }],
    [VM],
  ).toString();
  const li = /<li class="nvmf-host">([^<]*)<\/li>/.exec(page)?.[1];
  assertEquals(li, hostLines([{ nqn: "nqn.a", hostnqn: "nqn.h", cntlid: 3, io_queues: 2 }])[0]);
  const vm = /<li class="vm">([^<]*)<\/li>/.exec(page)?.[1];
  assertEquals(vm, vmLines([VM])[0]);
  assertEquals(vm, "vhost-user vm0 serves L0 on /x.sock");
  assert(page.includes('id="latency-chart"'), "the latency chart is on the dashboard");
  assert(/<li class="none" hidden>none<\/li>/.test(page), "'none' hidden when hosts are listed");
});

// --- the real APP_JS against a minimal DOM -----------------------------------------

interface FakeEl {
  id?: string;
  className: string;
  textContent: string;
  hidden: boolean;
  width: number;
  height: number;
  dataset: Record<string, string>;
  children: FakeEl[];
  parent?: FakeEl;
  remove(): void;
  getContext(): unknown;
  querySelector(sel: string): FakeEl | null;
  querySelectorAll(sel: string): FakeEl[];
  insertBefore(el: FakeEl, ref: FakeEl | null): void;
  readonly firstChild: FakeEl | null;
}

function el(className = "", text = ""): FakeEl {
  const noop = new Proxy({}, { get: () => () => ({}), set: () => true });
  const e: FakeEl = {
    className,
    textContent: text,
    hidden: false,
    width: 800,
    height: 160,
    dataset: {},
    children: [],
    remove() {
      if (this.parent) this.parent.children = this.parent.children.filter((c) => c !== this);
    },
    getContext: () => noop,
    querySelector(sel) {
      return this.querySelectorAll(sel)[0] ?? null;
    },
    querySelectorAll(sel) {
      // Only what the script asks of the hosts list: "li.a" or "li.a, li.b".
      const classes = sel.split(",").map((s) => s.trim().replace(/^li\./, ""));
      return this.children.filter((c) => classes.includes(c.className));
    },
    insertBefore(child, ref) {
      child.parent = this;
      const i = ref === null ? -1 : this.children.indexOf(ref);
      if (i < 0) this.children.push(child);
      else this.children.splice(i, 0, child);
    },
    get firstChild() {
      return this.children[0] ?? null;
    },
  };
  return e;
}

Deno.test("dashboard js: each snapshot updates the host list and adds p50/p99 points per volume", async () => {
  const app = new App();
  app.start();
  try {
    await app.call("bdev_malloc_create", { name: "L0", num_blocks: 16, block_size: 512 });
    const s1 = await app.call("sluice_get_stats") as StatsSnapshot;
    const hosts = el();
    hosts.insertBefore(el("vm", "vhost-user vm0 serves L0 on /x.sock"), null);
    hosts.insertBefore(el("none", "none"), null);
    (hosts.children[1] as FakeEl).hidden = true;
    const byId: Record<string, FakeEl> = {
      "iops-chart": el(),
      "mbps-chart": el(),
      "latency-chart": el(),
      hosts,
    };
    const listeners: ((ev: { data: string }) => void)[] = [];
    class FakeEventSource {
      constructor(readonly url: string) {}
      addEventListener(_type: string, fn: (ev: { data: string }) => void) {
        listeners.push(fn);
      }
    }
    const document = {
      getElementById: (id: string) => byId[id] ?? null,
      querySelector: () => null,
      createElement: () => el(),
    };
    new Function("document", "EventSource", "CSS", APP_JS)(document, FakeEventSource, {
      escape: (s: string) => s,
    });
    assertEquals(listeners.length, 1, "the script listens to /events");
    const send = (s: unknown) =>
      (listeners[0] as (ev: { data: string }) => void)({
        data: JSON.stringify(s),
      });

    const host = { nqn: "nqn.a", hostnqn: "nqn.h", cntlid: 1, io_queues: 2 };
    send({ ...s1, nvmf_hosts: [host], vhost: [VM, { ...VM, ctrlr: "vm1" }] });
    assertEquals(hosts.children.map((c) => [c.className, c.textContent]), [
      ["nvmf-host", "NVMe/TCP nqn.h on nqn.a (controller 1, 2 I/O queue(s))"],
      ["vm", "vhost-user vm0 serves L0 on /x.sock"],
      ["vm", "vhost-user vm1 serves L0 on /x.sock"],
      ["none", "none"],
    ]);
    assert((hosts.children[3] as FakeEl).hidden, "'none' hidden while something is listed");

    // One second later: 100 I/Os sampled, 60 in the first bucket, 40 in the third.
    const b = s1.bdevs[0] as StatsSnapshot["bdevs"][number];
    const buckets = b.latency.buckets.map(([us, n], i): [number | null, number] => [
      us,
      n + (i === 0 ? 60 : i === 2 ? 40 : 0),
    ]);
    const s2 = {
      ...s1,
      taken_ms: s1.taken_ms + 1000,
      nvmf_hosts: [],
      vhost: [VM],
      bdevs: [{ ...b, read_ops: b.read_ops + 100, latency: { ...b.latency, buckets } }],
    };
    send(s2);
    assertEquals(hosts.children.map((c) => c.className), ["vm", "none"], "host and vm1 left");
    assert((hosts.children[1] as FakeEl).hidden, "a VM is still listed: 'none' stays hidden");
    const last = JSON.parse((byId["latency-chart"] as FakeEl).dataset["last"] ?? "{}");
    assertEquals(last, {
      "L0 p50": b.latency.buckets[0]?.[0],
      "L0 p99": b.latency.buckets[2]?.[0],
    });
    assertEquals(JSON.parse((byId["iops-chart"] as FakeEl).dataset["last"] ?? "{}"), { L0: 100 });

    // A second with no I/O: a gap (null) in the latency lines, not a fake zero.
    send({ ...s2, taken_ms: s2.taken_ms + 1000, vhost: [] });
    assertEquals(hosts.children.map((c) => c.className), ["none"]);
    assert(!(hosts.children[0] as FakeEl).hidden, "nothing listed: 'none' shown");
    assertEquals(JSON.parse((byId["latency-chart"] as FakeEl).dataset["last"] ?? "{}"), {
      "L0 p50": null,
      "L0 p99": null,
    });
  } finally {
    await app.shutdown();
  }
});
