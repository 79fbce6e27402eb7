#!/usr/bin/env bash
# Stop every llama-server of the stack. Arguments go to `kitty-ops stop` (try --help).
set -euo pipefail
# shellcheck source=ops/scripts/_kitty-ops.sh
source "$(dirname "${BASH_SOURCE[0]}")/_kitty-ops.sh"
exec "$KITTY_OPS" stop "$@"
