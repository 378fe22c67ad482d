# raft-kv container image: the release binary, built on the host, on Debian bookworm (slim).
#
# The binary is built outside the image (no toolchain in it, no registry needed at build time):
#   deploy/build-image.sh            # = cargo build --release -p raft-kv, strip, docker build
# or by hand:
#   cargo build --release -p raft-kv
#   mkdir -p target/docker && strip -o target/docker/raft-kv target/release/raft-kv
#   docker build -f Dockerfile -t raft-kv:latest target/docker
# The build context is a directory holding only the stripped binary, named raft-kv.
#
# Runs as the unprivileged user raft-kv (uid and gid 10001), which owns /data (mount a volume there; a
# new named volume takes the directory's owner). `docker stop` sends SIGTERM: the node stops
# accepting, finishes what it was doing and exits 0.
FROM debian:bookworm-slim

RUN groupadd --system --gid 10001 raft-kv \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin raft-kv \
    && mkdir -p /data \
    && chown raft-kv:raft-kv /data \
    && chmod 0750 /data

COPY raft-kv /usr/local/bin/raft-kv

USER raft-kv:raft-kv
WORKDIR /data
VOLUME ["/data"]
# Client (Redis protocol) and core (peer) ports of the compose file's members; any ports work.
EXPOSE 10001 20001
STOPSIGNAL SIGTERM
ENTRYPOINT ["raft-kv"]
CMD ["--help"]
