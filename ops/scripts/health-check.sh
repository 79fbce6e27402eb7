#!/usr/bin/env bash
# Health of the whole stack, for cron and monitoring: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
# Arguments go to `kitty-ops health` (--quiet for cron, --json, --prometheus FILE; try --help).
set -euo pipefail
# shellcheck source=ops/scripts/_kitty-ops.sh
source "$(dirname "${BASH_SOURCE[0]}")/_kitty-ops.sh"
exec "$KITTY_OPS" health "$@"
