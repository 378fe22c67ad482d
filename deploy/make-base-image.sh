#!/usr/bin/env bash
# Makes the base image debian:bookworm-slim without a container registry: debootstrap (minbase)
# from Debian's package mirror into a temporary directory, trimmed like the slim image (no docs,
# man pages, locales or apt lists), imported with `docker import`. Does nothing if the image exists.
# Needs root and the debootstrap package (apt-get install debootstrap).
set -euo pipefail
image="debian:bookworm-slim"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image already present"
  exit 0
fi
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d /tmp/raft-kv-bookworm.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log"; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$image" >/dev/null
echo "made $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
