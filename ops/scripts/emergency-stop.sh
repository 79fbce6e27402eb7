#!/usr/bin/env bash
# Kill everything the stack owns, now (SIGKILL; containers of its compose project only).
# Arguments go to `kitty-ops emergency-stop` (--deadline S, --env-file PATH, --json). When
# kitty-ops cannot run, or fails, the pure-bash fallback does the same from the PID records.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KITTY_PROJECT_DIR="$(cd "$here/../.." && pwd)"
export KITTY_PROJECT_DIR
ops="${KITTY_OPS_BIN:-$KITTY_PROJECT_DIR/.venv/bin/kitty-ops}"
if [[ -x "$ops" ]] && "$ops" emergency-stop "$@"; then
  exit 0
fi
echo "emergency-stop: kitty-ops could not finish ($ops); running the bash fallback" >&2
exec "$here/_emergency-fallback.sh" "$@"
