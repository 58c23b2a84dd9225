/**
 * The PCIe backend of the driver: a PCI function bound to vfio-pci, opened
 * through VFIO, reset (function level reset where the kernel offers one),
 * bus master enabled, BAR0 mmapped, DMA mapped through the container.
 * @module
 */
import { VfioPciFunction, VfioPciIrq } from "../../ffi/vfio.ts";
import { eventfd, sym } from "../../ffi/libc.ts";
import { VfioDmaSpace } from "./dma.ts";
import { BarMmio } from "./mmio.ts";
import type { DmaSpace } from "./dma.ts";
import type { NvmeMmio } from "./mmio.ts";

/** What the controller driver runs on. */
export interface PcieBackend {
  mmio: NvmeMmio;
  dma: DmaSpace;
  describe(): Record<string, unknown>;
  /**
   * Turns on MSI-X vector 0 into an eventfd and returns it (completion interrupts), or
   * undefined when the device has no MSI-X or VFIO refuses. Only called when interrupts are wanted.
   */
  enableInterrupts?(): number | undefined;
  /**
   * Calls `onRequest` once if the kernel asks for the device back (vfio-pci's REQ interrupt:
   * the device is being removed or unbound). Watched on Deno's blocking thread pool.
   */
  watchRemoval?(onRequest: () => void): void;
  close(): void | Promise<void>;
}

const POLLIN = 1;
/** How long one poll of the request eventfd sleeps before looking at `closed` again. */
const REQ_POLL_MS = 1000;

/**
 * Opens `bdf` for the driver.
 * @throws {VfioError} naming the missing piece (IOMMU, vfio-pci binding, module)
 */
export function openPcieBackend(bdf: string): PcieBackend {
  const fn = VfioPciFunction.open(bdf);
  try {
    const dev = fn.device;
    // FLR first: it also clears the command register, so bus master comes after.
    const didReset = dev.reset();
    dev.enableBusMaster();
    const bar = dev.mapRegion(0);
    const mmio = new BarMmio(bar);
    const dma = new VfioDmaSpace(fn.container);
    let closed = false;
    // The kernel's request to release the device arrives on an eventfd.
    let reqFd = -1;
    if (dev.irqCount(VfioPciIrq.REQ) > 0) {
      reqFd = eventfd();
      try {
        dev.setIrqEventfd(VfioPciIrq.REQ, reqFd);
      } catch {
        sym.close(reqFd);
        reqFd = -1;
      }
    }
    // Completion interrupts, on request: MSI-X vector 0 into an eventfd the reactor can sleep on.
    let irqFd = -1;
    const enableInterrupts = (): number | undefined => {
      if (irqFd >= 0) return irqFd;
      if (closed || dev.irqCount(VfioPciIrq.MSIX) === 0) return undefined;
      const fd = eventfd();
      try {
        dev.setIrqEventfd(VfioPciIrq.MSIX, fd);
      } catch {
        sym.close(fd);
        return undefined; // polling alone still works
      }
      irqFd = fd;
      return fd;
    };
    let watching: Promise<void> | null = null;
    const wakeOne = new BigUint64Array([1n]);
    return {
      mmio,
      dma,
      enableInterrupts,
      describe: () => ({
        pci_address: dev.bdf,
        iommu_group: fn.group,
        bar0_bytes: bar.length,
        function_reset: didReset,
        removal_notification: reqFd >= 0,
        msix_interrupts: irqFd >= 0,
      }),
      watchRemoval: (onRequest) => {
        if (reqFd < 0 || watching !== null) return;
        const pfd = new Uint8Array(8);
        const pv = new DataView(pfd.buffer);
        pv.setInt32(0, reqFd, true);
        pv.setInt16(4, POLLIN, true);
        const sink = new BigUint64Array(1);
        watching = (async () => {
          while (!closed) {
            pv.setInt16(6, 0, true);
            const n = await sym.poll_nonblocking(pfd, 1n, REQ_POLL_MS);
            if (closed) break;
            if (n > 0 && (pv.getInt16(6, true) & POLLIN) !== 0) {
              sym.read(reqFd, sink, 8n);
              onRequest();
              break;
            }
          }
        })();
      },
      close: async () => {
        if (closed) return;
        closed = true;
        if (watching !== null) {
          // Wake the watcher's poll so it ends now, not at its timeout.
          sym.write(reqFd, wakeOne, 8n);
          await watching;
        }
        try {
          dev.disableBusMaster();
        } catch {
          // Removed device: nothing to tell it.
        }
        bar.unmap();
        fn.close();
        if (reqFd >= 0) sym.close(reqFd);
        if (irqFd >= 0) sym.close(irqFd);
      },
    };
  } catch (e) {
    fn.close();
    throw e;
  }
}
