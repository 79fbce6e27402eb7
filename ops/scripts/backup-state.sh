#!/usr/bin/env bash
# Back up the stack's state (postgres, redis, S3 objects, .env) into one verified directory.
# Arguments go to `kitty-ops backup` (--keep N, --label WORD, --json; try --help).
set -euo pipefail
# shellcheck source=ops/scripts/_kitty-ops.sh
source "$(dirname "${BASH_SOURCE[0]}")/_kitty-ops.sh"
exec "$KITTY_OPS" backup "$@"
