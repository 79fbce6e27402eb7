#!/usr/bin/env bash
# Start the stack and keep it up until SIGTERM/Ctrl+C. Arguments go to `kitty-ops supervise`
# (try --help; --stop-on-exit also stops the stack when the supervisor ends).
set -euo pipefail
# shellcheck source=ops/scripts/_kitty-ops.sh
source "$(dirname "${BASH_SOURCE[0]}")/_kitty-ops.sh"
exec "$KITTY_OPS" supervise "$@"
