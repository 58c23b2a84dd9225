/**
 * The PCIe backend of the driver: a PCI function bound to vfio-pci, opened
 * through VFIO, reset (function level reset where the kernel offers one),
 * bus master enabled, BAR0 mmapped, DMA mapped through the container.
 * @module
 */
import { VfioPciFunction } from "../../ffi/vfio.ts";
import { VfioDmaSpace } from "./dma.ts";
import { BarMmio } from "./mmio.ts";
import type { DmaSpace } from "./dma.ts";
import type { NvmeMmio } from "./mmio.ts";

/** What the controller driver runs on. */
export interface PcieBackend {
  mmio: NvmeMmio;
  dma: DmaSpace;
  describe(): Record<string, unknown>;
  close(): void;
}

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
    return {
      mmio,
      dma,
      describe: () => ({
        pci_address: dev.bdf,
        iommu_group: fn.group,
        bar0_bytes: bar.length,
        function_reset: didReset,
      }),
      close: () => {
        if (closed) return;
        closed = true;
        try {
          dev.disableBusMaster();
        } catch {
          // Removed device: nothing to tell it.
        }
        bar.unmap();
        fn.close();
      },
    };
  } catch (e) {
    fn.close();
    throw e;
  }
}
