#!/usr/bin/env bash
# Restore a backup over the current state (verifies it and takes a safety backup first).
# Arguments go to `kitty-ops restore` (NAME|PATH, --yes (required without a terminal), --json; try --help).
set -euo pipefail
# shellcheck source=ops/scripts/_kitty-ops.sh
source "$(dirname "${BASH_SOURCE[0]}")/_kitty-ops.sh"
exec "$KITTY_OPS" restore "$@"
