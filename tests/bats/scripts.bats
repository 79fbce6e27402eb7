#!/usr/bin/env bats
# bats's `run --separate-stderr` sets $stderr and $stderr_lines.
# shellcheck disable=SC2154
# The shell entry points ops/scripts/*.sh (start-all, stop-all, health-check, backup-state,
# restore-state): argument pass-through, exit
# codes kept from the CLI, a real start/stop round trip against the fake llama-server, the
# missing-install message, and shell hygiene (shellcheck, strict mode).

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  common_setup
}

teardown() {
  common_teardown
}

@test "start-all.sh --help shows kitty-ops start's help and exits 0" {
  run --separate-stderr "$START_ALL" --help
  assert_success
  assert_output --partial "Usage: kitty-ops start"
  assert_output --partial "--only"
  assert_output --partial "--env-file"
}

@test "stop-all.sh --help shows kitty-ops stop's help and exits 0" {
  run --separate-stderr "$STOP_ALL" --help
  assert_success
  assert_output --partial "Usage: kitty-ops stop"
  assert_output --partial "--only"
  assert_output --partial "--env-file"
  assert_output --partial "--grace"
}

@test "start-all.sh with an unknown option exits 2 (usage error)" {
  run --separate-stderr "$START_ALL" --no-such-option
  assert_failure 2
  [[ "$stderr" == *"No such option"* ]] || fail "stderr lacks click's usage error: $stderr"
}

@test "stop-all.sh with an unknown option exits 2 (usage error)" {
  run --separate-stderr "$STOP_ALL" --no-such-option
  assert_failure 2
  [[ "$stderr" == *"No such option"* ]] || fail "stderr lacks click's usage error: $stderr"
}

@test "start-all.sh keeps exit 3 for a missing --env-file and names the file" {
  local missing="$BATS_TEST_TMPDIR/does-not-exist.env"
  # Keep any side effect out of the checkout's own .logs.
  export KITTY_LOGS_DIR="$BATS_TEST_TMPDIR/logs"
  run --separate-stderr "$START_ALL" --env-file "$missing"
  assert_failure 3
  [[ "$stderr" == *"$missing"* ]] || fail "stderr does not name $missing: $stderr"
}

@test "start-all.sh then stop-all.sh: fake server starts (exit 0, PID file) and stops (exit 0, pid gone)" {
  write_fake_env
  run --separate-stderr "$START_ALL" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "start-all.sh exited $status; stdout: $output; stderr: $stderr"
  assert_file_exists "$LOGS_DIR/llamacpp-q4.pid"
  local pid
  pid="$(tr -d '[:space:]' <"$LOGS_DIR/llamacpp-q4.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || fail "PID file holds '$pid'"
  alive "$pid" || fail "pid $pid from the PID file is not running"

  run --separate-stderr "$STOP_ALL" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "stop-all.sh exited $status; stdout: $output; stderr: $stderr"
  ! alive "$pid" || fail "pid $pid still runs after stop-all.sh"
  assert_file_not_exists "$LOGS_DIR/llamacpp-q4.pid"
}

@test "start-all.sh exits 1 when the server crashes while loading" {
  write_fake_env "--fake-crash-after 0.2"
  run --separate-stderr "$START_ALL" --env-file "$ENV_FILE"
  [[ "$status" -eq 1 ]] || fail "expected exit 1, got $status; stdout: $output; stderr: $stderr"
  [[ "$stderr" == *"q4 failed"* ]] || fail "stderr does not report q4 failing: $stderr"
  # What this run started was stopped again: no PID file is left behind.
  assert_file_not_exists "$LOGS_DIR/llamacpp-q4.pid"
}

@test "health-check.sh as cron runs it: silent when OK with --quiet, exit 2 and a status line when the server died" {
  write_fake_env
  run --separate-stderr "$START_ALL" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "start-all.sh exited $status; stderr: $stderr"
  run --separate-stderr "$HEALTH_CHECK" --env-file "$ENV_FILE" --quiet
  assert_success
  assert_output ""
  [[ -z "$stderr" ]] || fail "cron would mail this stderr: $stderr"

  local pid
  pid="$(tr -d '[:space:]' <"$LOGS_DIR/llamacpp-q4.pid")"
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.05; done
  run --separate-stderr "$HEALTH_CHECK" --env-file "$ENV_FILE" --quiet
  assert_failure 2
  [[ "${lines[0]}" == "KITTY CRITICAL - 0/1 healthy; critical: q4 down (pid $pid is gone"* ]] || fail "first line: ${lines[0]}"
}

@test "health-check.sh with an unknown option exits 3 (UNKNOWN), never 2 (CRITICAL)" {
  run --separate-stderr "$HEALTH_CHECK" --no-such-option
  assert_failure 3
  [[ "${lines[0]}" == "KITTY UNKNOWN - bad arguments: No such option"* ]] || fail "first line: ${lines[0]}"
}

@test "backup-state.sh, verify-backup, restore-state.sh: an env-only round trip (0700/0600; --yes required without a terminal)" {
  write_fake_env
  local backups="$BATS_TEST_TMPDIR/backups"
  printf 'KITTY_BACKUP_DIR=%s\nKITTY_BACKUP_PARTS=env\n' "$backups" >>"$ENV_FILE"
  run --separate-stderr "$BACKUP_STATE" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "backup-state.sh exited $status; stderr: $stderr"
  local made
  made="$(find "$backups" -mindepth 1 -maxdepth 1 -type d)"
  [[ "$(basename "$made")" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || fail "backup directory name: $made"
  assert_equal "$(file_mode "$made")" "700"
  assert_equal "$(file_mode "$made/env")" "600"
  cmp "$made/env" "$ENV_FILE" || fail "the backed-up env differs from the original"

  run --separate-stderr "$REPO_ROOT/.venv/bin/kitty-ops" verify-backup --env-file "$ENV_FILE"
  assert_success

  echo "LLAMACPP_Q4_CTX=999" >>"$ENV_FILE"
  run --separate-stderr "$RESTORE_STATE" --env-file "$ENV_FILE"
  assert_failure 2
  [[ "$stderr" == *"refusing to restore without --yes"* ]] || fail "stderr: $stderr"
  grep -q "LLAMACPP_Q4_CTX=999" "$ENV_FILE" || fail "the refused restore changed the env file"

  run --separate-stderr "$RESTORE_STATE" --env-file "$ENV_FILE" --yes
  [[ "$status" -eq 0 ]] || fail "restore-state.sh --yes exited $status; stderr: $stderr"
  cmp "$made/env" "$ENV_FILE" || fail "the env file was not restored"
  assert_equal "$(file_mode "$ENV_FILE")" "600"
  # The state before the restore was kept: a second, complete backup labelled pre-restore.
  compgen -G "$backups/*-pre-restore/manifest.json" >/dev/null || fail "no safety backup in $backups"
}

@test "emergency-stop.sh kills a server that ignores SIGTERM; with kitty-ops missing, the bash fallback does it" {
  local pid
  for bin in "" "$BATS_TEST_TMPDIR/nowhere/kitty-ops"; do
    write_fake_env "--fake-ignore-sigterm"
    run --separate-stderr "$START_ALL" --env-file "$ENV_FILE"
    [[ "$status" -eq 0 ]] || fail "start-all.sh exited $status; stderr: $stderr"
    pid="$(tr -d '[:space:]' <"$LOGS_DIR/llamacpp-q4.pid")"
    KITTY_OPS_BIN="${bin:-$REPO_ROOT/.venv/bin/kitty-ops}" run --separate-stderr "$EMERGENCY_STOP" --env-file "$ENV_FILE"
    [[ "$status" -eq 0 ]] || fail "emergency-stop.sh exited $status; stdout: $output; stderr: $stderr"
    ! alive "$pid" || fail "pid $pid survived the emergency stop"
    assert_file_not_exists "$LOGS_DIR/llamacpp-q4.pid"
    if [[ -n "$bin" ]]; then
      [[ "$stderr" == *"running the bash fallback"* ]] || fail "no fallback notice: $stderr"
    fi
  done
}

@test "a missing kitty-ops (KITTY_OPS_BIN) exits 3 with one line naming 'make setup'" {
  local script
  for script in "$START_ALL" "$STOP_ALL" "$HEALTH_CHECK" "$BACKUP_STATE" "$RESTORE_STATE"; do
    KITTY_OPS_BIN="$BATS_TEST_TMPDIR/nowhere/kitty-ops" run --separate-stderr "$script"
    assert_failure 3
    assert_equal "${#stderr_lines[@]}" 1
    [[ "$stderr" == *"make setup"* ]] || fail "$script: stderr does not name 'make setup': $stderr"
    [[ "$stderr" == *"$BATS_TEST_TMPDIR/nowhere/kitty-ops"* ]] || fail "$script: stderr does not name the path: $stderr"
    assert_output ""
  done
}

@test "the scripts pass shellcheck -x" {
  command -v shellcheck >/dev/null || fail "shellcheck is not installed"
  cd "$REPO_ROOT"
  run shellcheck -x ops/scripts/*.sh
  assert_success
}

@test "the entry points start with set -euo pipefail" {
  local script first
  for script in "$START_ALL" "$STOP_ALL" "$HEALTH_CHECK" "$BACKUP_STATE" "$RESTORE_STATE" "$EMERGENCY_STOP"; do
    assert_file_executable "$script"
    assert_equal "$(head -n 1 "$script")" "#!/usr/bin/env bash"
    # The first command after the shebang and comments is strict mode.
    first="$(grep -v -E '^[[:space:]]*(#|$)' "$script" | head -n 1)"
    assert_equal "$first" "set -euo pipefail"
  done
}

@test "with BASH32 set, the scripts' #!/usr/bin/env bash is that bash 3.2 (as macOS's /bin/bash)" {
  local version
  version="$(env bash -c 'echo "${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}"')"
  if [[ -n "${BASH32:-}" ]]; then
    assert_equal "$version" "3.2"
  else
    [[ "$version" =~ ^[0-9]+\.[0-9]+$ ]] || fail "no bash version: $version"
  fi
}
