import assert from "node:assert/strict";
import { volumesPage } from "./pages.ts";

Deno.test("volumes page: the node's NVMe drives, free ones with a one-click Attach", async () => {
  const page = String(
    await volumesPage("tok", [], { error: null }, null, {
      keys: [],
      controllers: [{
        name: "Nvme0",
        ctrlrs: [{ state: "enabled", trid: { trtype: "PCIe", traddr: "0000:00:04.0" }, bdevs: [] }],
      }],
      pciDrives: [
        { address: "0000:00:03.0", driver: "nvme", inUse: ["/dev/nvme0n1p2 is mounted on /"] },
        { address: "0000:00:04.0", driver: "vfio-pci", inUse: [] },
        { address: "0000:00:05.0", driver: "vfio-pci", inUse: [] },
        { address: "0000:00:06.0", driver: "nvme", inUse: [] },
      ],
    }),
  );
  const row = (a: string) => new RegExp(`<tr data-pci="${a}">([\\s\\S]*?)</tr>`).exec(page)?.[1];
  assert.match(row("0000:00:03.0") ?? "", /in use by the system: \/dev\/nvme0n1p2 is mounted/);
  assert.match(row("0000:00:04.0") ?? "", /attached as Nvme0/);
  const free = row("0000:00:05.0") ?? "";
  // The next free controller name, the address, the session's CSRF token: one click attaches.
  assert.match(free, /action="\/volumes\/create-nvme"/);
  assert.match(free, /name="_csrf" value="tok"/);
  assert.match(free, /name="name" value="Nvme1"/);
  assert.match(free, /name="traddr" value="0000:00:05.0"/);
  assert.match(row("0000:00:06.0") ?? "", /sluice setup bind 0000:00:06.0/);
  assert.doesNotMatch(row("0000:00:04.0") ?? "", /<button>Attach/);
});
