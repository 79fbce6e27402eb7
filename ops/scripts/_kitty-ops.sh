# shellcheck shell=bash
# Sourced by the entry points: find this checkout and its kitty-ops, or say how to get one.
# KITTY_OPS_BIN overrides the command (tests use it); otherwise the project's .venv is used.
KITTY_PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KITTY_PROJECT_DIR
KITTY_OPS="${KITTY_OPS_BIN:-$KITTY_PROJECT_DIR/.venv/bin/kitty-ops}"
if [[ ! -x "$KITTY_OPS" ]]; then
  echo "kitty-ops is not installed at $KITTY_OPS: run 'make setup' in $KITTY_PROJECT_DIR" >&2
  exit 3
fi
