# Shared by upgrade and slot-good: GRUB's environment block on the ESP (1024 bytes, "#"-padded,
# what grub-editenv writes), which grub.cfg reads: sluice_slot (default slot), sluice_next (boot
# once).
GRUBENV=/boot/efi/grub/grubenv

# The slot this boot came from (sluice.slot= on the kernel command line, set by grub.cfg).
booted_slot() {
  sed -n 's/.*sluice\.slot=\([ab]\).*/\1/p' /proc/cmdline
}

env_get() { # env_get NAME
  sed -n "s/^$1=\([ab]\)\$/\1/p" "$GRUBENV" 2>/dev/null | head -n 1
}

env_write() { # env_write SLOT [NEXT]
  tmp="$GRUBENV.new"
  {
    printf '# GRUB Environment Block\nsluice_slot=%s\n' "$1"
    if [ -n "${2:-}" ]; then printf 'sluice_next=%s\n' "$2"; fi
  } > "$tmp"
  pad=$((1024 - $(stat -c %s "$tmp")))
  head -c "$pad" /dev/zero | tr '\0' '#' >> "$tmp"
  sync "$tmp"
  mv "$tmp" "$GRUBENV"
  sync "$GRUBENV"
}
