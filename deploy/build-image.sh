#!/usr/bin/env bash
# Builds the raft-kv container image from a release binary built on this machine.
# Usage: deploy/build-image.sh [TAG]   (default raft-kv:latest)
# Needs the base image debian:bookworm-slim (pulled, or made offline by deploy/make-base-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-raft-kv:latest}"
cargo build --release -p raft-kv
ctx="target/docker"
mkdir -p "$ctx"
strip -o "$ctx/raft-kv" target/release/raft-kv
docker build -q -f Dockerfile -t "$tag" "$ctx"
echo "built $tag ($(du -h "$ctx/raft-kv" | cut -f1) binary)"
