/**
 * The appliance disk's layout: GPT partitions, their fixed GUIDs and file system ids (fixed so
 * that two builds give the same bytes), and the Debian mirrors the root file system comes from.
 *
 * ```
 * MiB     0-1     protective MBR with GRUB's boot.img, GPT
 * p1      1-2     BIOS boot: GRUB's core.img (BIOS)
 * p2      2-64    ESP, FAT32 "SLUICE-ESP": EFI/BOOT/BOOTX64.EFI, grub/grub.cfg, grub/grubenv,
 *                 sluice/ (operator settings: network/*.network, hostname, authorized_keys)
 * p3     64-1088  root slot A, ext4 "sluice-root-a", read-only
 * p4   1088-2112  root slot B (empty until the first upgrade writes it)
 * p5   2112-2368  data, ext4 "sluice-data": /var/lib/sluice; grown to the end of the disk at boot
 * ```
 * @module
 */

/** Bumped when the rootfs hooks' meaning changes in a way their text does not show. */
export const IMAGE_FORMAT = 1;
export const SECTOR = 512;

/** Debian bookworm, main only. */
export const MIRRORS: readonly string[] = [
  "deb http://deb.debian.org/debian bookworm main",
  "deb http://deb.debian.org/debian bookworm-updates main",
  "deb http://deb.debian.org/debian-security bookworm-security main",
];

export const DISK = {
  biosBootStartMiB: 1,
  biosBootMiB: 1,
  espStartMiB: 2,
  espMiB: 62,
  rootAStartMiB: 64,
  rootBStartMiB: 64 + 1024,
  rootMiB: 1024,
  dataStartMiB: 64 + 2048,
  dataMiB: 256,
  /** The last partition's end plus 1 MiB for the backup GPT. */
  totalMiB: 64 + 2048 + 256 + 1,
  diskGuid: "5a1c0e00-0000-4000-8000-000000000000",
  biosBootGuid: "5a1c0e00-0000-4000-8000-000000000001",
  espGuid: "5a1c0e00-0000-4000-8000-000000000002",
  rootAGuid: "5a1c0e00-0000-4000-8000-00000000000a",
  rootBGuid: "5a1c0e00-0000-4000-8000-00000000000b",
  dataGuid: "5a1c0e00-0000-4000-8000-0000000000da",
  rootAFsUuid: "5a1c0e00-0000-4000-8000-0000000001a0",
  rootBFsUuid: "5a1c0e00-0000-4000-8000-0000000001b0",
  dataFsUuid: "5a1c0e00-0000-4000-8000-0000000001da",
  /** FAT volume id; GRUB and /dev/disk/by-uuid show it as XXXX-XXXX. */
  espVolumeId: "5C1CE5A0",
  espFsUuid: "5C1C-E5A0",
} as const;

const TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649";
const TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/** "Linux root (x86-64)" of the Discoverable Partitions Specification. */
const TYPE_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const TYPE_LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/** The sfdisk script of the layout. */
export function partitionTable(): string {
  const s = (m: number) => m * 1024 * 1024 / SECTOR;
  const part = (start: number, size: number, type: string, uuid: string, name: string) =>
    `start=${s(start)}, size=${s(size)}, type=${type}, uuid=${uuid}, name="${name}"`;
  return [
    "label: gpt",
    `label-id: ${DISK.diskGuid}`,
    "unit: sectors",
    "first-lba: 2048",
    part(DISK.biosBootStartMiB, DISK.biosBootMiB, TYPE_BIOS_BOOT, DISK.biosBootGuid, "bios-boot"),
    part(DISK.espStartMiB, DISK.espMiB, TYPE_ESP, DISK.espGuid, "esp"),
    part(DISK.rootAStartMiB, DISK.rootMiB, TYPE_ROOT_X86_64, DISK.rootAGuid, "sluice-root-a"),
    part(DISK.rootBStartMiB, DISK.rootMiB, TYPE_ROOT_X86_64, DISK.rootBGuid, "sluice-root-b"),
    part(DISK.dataStartMiB, DISK.dataMiB, TYPE_LINUX_DATA, DISK.dataGuid, "sluice-data"),
    "",
  ].join("\n");
}
