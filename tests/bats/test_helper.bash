# shellcheck shell=bash
# Shared setup for the ops script tests: a sandboxed HOME, a clean environment, a working
# directory outside the checkout, and a fake-llama-server configuration on demand.

# shellcheck disable=SC2034  # used by scripts.bats
REPO_ROOT="$(cd "$(dirname "${BATS_TEST_FILENAME}")/../.." && pwd)"
START_ALL="$REPO_ROOT/ops/scripts/start-all.sh"
STOP_ALL="$REPO_ROOT/ops/scripts/stop-all.sh"
HEALTH_CHECK="$REPO_ROOT/ops/scripts/health-check.sh"
BACKUP_STATE="$REPO_ROOT/ops/scripts/backup-state.sh"
RESTORE_STATE="$REPO_ROOT/ops/scripts/restore-state.sh"
EMERGENCY_STOP="$REPO_ROOT/ops/scripts/emergency-stop.sh"
FAKE_SERVER="$REPO_ROOT/tests/fakes/fake_llama_server.py"

# The helper libraries: Debian's /usr/lib/bats, or Homebrew's (brew tap bats-core/bats-core).
load_libs() {
  export BATS_LIB_PATH="${BATS_LIB_PATH:-/usr/lib/bats:/opt/homebrew/lib:/usr/local/lib}"
  bats_load_library bats-support
  bats_load_library bats-assert
  bats_load_library bats-file
}

common_setup() {
  load_libs
  # Nothing from the caller's environment may configure kitty-ops: the env file is the config.
  local var
  while read -r var; do
    unset "$var"
  done < <(compgen -e | grep -E '^(LLAMACPP|KITTY)_' || true)
  # The sandboxed HOME hides Docker Desktop's context (~/.docker): keep its endpoint.
  if [[ -z "${DOCKER_HOST:-}" ]] && command -v docker >/dev/null; then
    DOCKER_HOST="$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || true)"
    if [[ -n "$DOCKER_HOST" ]]; then export DOCKER_HOST; else unset DOCKER_HOST; fi
  fi
  export HOME="$BATS_TEST_TMPDIR/home"
  mkdir -p "$HOME"
  # BASH32 names a bash 3.2 (macOS's /bin/bash level): every `#!/usr/bin/env bash` script the
  # test runs then runs under it, as it does on a Mac whose PATH has no Homebrew bash first.
  if [[ -n "${BASH32:-}" ]]; then
    mkdir -p "$BATS_TEST_TMPDIR/bash32"
    ln -sf "$BASH32" "$BATS_TEST_TMPDIR/bash32/bash"
    export PATH="$BATS_TEST_TMPDIR/bash32:$PATH"
  fi
  export PYTHONUNBUFFERED=1
  WORK_DIR="$BATS_TEST_TMPDIR/elsewhere"
  mkdir -p "$WORK_DIR"
  cd "$WORK_DIR" || return 1
  ENV_FILE=""
}

common_teardown() {
  # Safety net: whatever a test left running is stopped by kitty-ops itself (proven-ours only).
  if [[ -n "${ENV_FILE:-}" && -f "$ENV_FILE" ]]; then
    "$STOP_ALL" --env-file "$ENV_FILE" --grace 1 >/dev/null 2>&1 || true
  fi
}

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# write_fake_env [EXTRA_ARGS]: one fake server "q4"; sets ENV_FILE, LOGS_DIR, PORT.
write_fake_env() {
  local extra="${1:-}"
  local models="$BATS_TEST_TMPDIR/models"
  mkdir -p "$models"
  { printf 'GGUF\x03\x00\x00\x00'; head -c 24 /dev/zero; } >"$models/tiny.gguf"
  LOGS_DIR="$BATS_TEST_TMPDIR/logs"
  PORT="$(free_port)"
  ENV_FILE="$BATS_TEST_TMPDIR/fake.env"
  {
    echo "LLAMACPP_SERVERS=q4"
    echo "LLAMACPP_SERVER_BIN=$FAKE_SERVER"
    echo "LLAMACPP_MODELS_DIR=$models"
    echo "LLAMACPP_Q4_MODEL=tiny.gguf"
    echo "LLAMACPP_Q4_PORT=$PORT"
    echo "LLAMACPP_Q4_THREADS=1"
    echo "LLAMACPP_HEALTH_TIMEOUT=20"
    echo "KITTY_STOP_GRACE=3"
    echo "KITTY_LOGS_DIR=$LOGS_DIR"
    echo "KITTY_COMPOSE_ENABLED=false"  # these tests are about the scripts, not the container tier
    echo "LLAMACPP_METRICS=false"  # the fake serves no /metrics (start would fail a --metrics server)
    if [[ -n "$extra" ]]; then
      echo "LLAMACPP_Q4_EXTRA_ARGS=\"$extra\""
    fi
  } >"$ENV_FILE"
}

# alive PID: true when PID runs and is not a zombie (orphans may not be reaped here).
alive() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

# wait_gone PID: up to 5 s for PID to exit (or turn zombie).
wait_gone() {
  local _
  for _ in $(seq 1 100); do
    alive "$1" || return 0
    sleep 0.05
  done
  fail "pid $1 still runs"
}

# file_mode PATH: the permission bits in octal (GNU stat -c, BSD stat -f).
file_mode() {
  stat -c %a "$1" 2>/dev/null || stat -f %Lp "$1"  # linux-only: the first form; macOS takes the second
}
