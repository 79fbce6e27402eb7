#!/usr/bin/env bash
# Install the tools the tests need (bats, shellcheck; on Linux systemd for systemd-analyze) with the
# system's package manager.
set -euo pipefail
if command -v apt-get >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q bats bats-assert bats-support bats-file shellcheck systemd
elif command -v brew >/dev/null; then
  # bats-support, bats-assert and bats-file come from the bats-core project's own tap.
  brew tap bats-core/bats-core
  brew install bats-core bats-support bats-assert bats-file shellcheck
else
  echo "install bats-core and shellcheck with your package manager, then run make again" >&2
  exit 1
fi
