#!/bin/sh
# mmdebstrap --setup-hook: runs before any package is installed ($1 is the new root).
set -eu
root="$1"
# The initramfs: zstd, and the modules a server may boot from (MODULES=most is Debian's default).
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf 'COMPRESS=zstd\nMODULES=most\n' > "$root/etc/initramfs-tools/conf.d/sluice.conf"
# No documentation, manual pages or translations (copyright files stay: they are the licenses).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/sluice-nodoc" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/bash-completion/*
path-exclude=/usr/share/zsh/*
CFG
