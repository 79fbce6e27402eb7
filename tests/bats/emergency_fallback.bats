#!/usr/bin/env bats
# bats's `run --separate-stderr` sets $stderr.
# shellcheck disable=SC2154
# ops/scripts/_emergency-fallback.sh, the emergency stop with no Python, run directly the way
# emergency-stop.sh runs it when kitty-ops cannot: with no record, a live server's record, a stale
# one, a reused PID, a record whose last argument has spaces, another locale, and a Docker engine
# that is down or hangs. Under bash 3.2 too (make test runs the suite again with BASH32).

bats_require_minimum_version 1.5.0

setup() {
  load test_helper
  common_setup
  FALLBACK="$REPO_ROOT/ops/scripts/_emergency-fallback.sh"
}

teardown() {
  [[ -z "${STRANGER:-}" ]] || kill "$STRANGER" 2>/dev/null || true
  common_teardown
}

# start_fake [EXTRA_ARGS]: a fake server started by start-all.sh; sets PID.
start_fake() {
  write_fake_env "${1:-}"
  run --separate-stderr "$START_ALL" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "start-all.sh exited $status; stderr: $stderr"
  PID="$(tr -d '[:space:]' <"$LOGS_DIR/llamacpp-q4.pid")"
  alive "$PID" || fail "the fake server $PID is not running"
}

@test "fallback with no record at all: exit 0, nothing to do, no 'unbound variable' (bash 3.2)" {
  write_fake_env
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  [[ "$stderr" != *"unbound variable"* ]] || fail "aborted: $stderr"
  assert_output ""
}

@test "fallback kills a live server proven by its record, removes the record, frees the port" {
  start_fake "--fake-ignore-sigterm"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  [[ "$output" == *"q4  killed"* ]] || fail "no 'killed' row: $output"
  ! alive "$PID" || fail "pid $PID survived"
  assert_file_not_exists "$LOGS_DIR/llamacpp-q4.json"
  assert_file_not_exists "$LOGS_DIR/llamacpp-q4.pid"
}

@test "fallback under LC_ALL=en_GB.UTF-8 and de_DE.UTF-8 still proves and kills the server" {
  local locale
  for locale in en_GB.UTF-8 de_DE.UTF-8; do
    start_fake
    LC_ALL="$locale" LANG="$locale" run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
    [[ "$status" -eq 0 ]] || fail "$locale: exited $status; stdout: $output; stderr: $stderr"
    ! alive "$PID" || fail "$locale: pid $PID survived"
    assert_file_not_exists "$LOGS_DIR/llamacpp-q4.json"
  done
}

@test "fallback kills a server whose last argument has spaces (…/Application Support/…)" {
  local spaced="$BATS_TEST_TMPDIR/Application Support/kitty"
  mkdir -p "$spaced"
  start_fake "--fake-ready-file '$spaced/ready'"
  [[ "$(ps -ww -o args= -p "$PID")" == *"Application Support/kitty/ready" ]] \
    || fail "the spaced path is not the last argument: $(ps -ww -o args= -p "$PID")"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  ! alive "$PID" || fail "pid $PID survived: $output"
  assert_file_not_exists "$LOGS_DIR/llamacpp-q4.json"
}

@test "fallback removes a stale record (process gone) and says so" {
  start_fake
  kill -KILL "$PID"
  wait_gone "$PID"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  [[ "$output" == *"q4  gone"* ]] || fail "no 'gone' row: $output"
  assert_file_not_exists "$LOGS_DIR/llamacpp-q4.json"
}

@test "fallback never signals a reused PID: another program keeps running, its stale record goes" {
  start_fake
  local record="$LOGS_DIR/llamacpp-q4.json"
  kill -KILL "$PID"  # the server died; its PID now stands for another program
  wait_gone "$PID"
  sleep 300 &
  STRANGER=$!
  # The record now names the stranger's PID, with the start time it had when it was ours.
  sed -i.bak "s/^  \"pid\": [0-9]*,/  \"pid\": $STRANGER,/; s/^  \"create_time\": [0-9.]*,/  \"create_time\": 1000000000.0,/" "$record"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  alive "$STRANGER" || fail "the stranger $STRANGER was killed"
  [[ "$output" == *"left alone"* ]] || fail "no 'left alone' row: $output"
  assert_file_not_exists "$record"
}

@test "fallback leaves a live process it cannot compare (a non-ASCII argument) alone, keeps its record, exits 1" {
  local accented="$BATS_TEST_TMPDIR/Café"
  mkdir -p "$accented"
  start_fake "--fake-ready-file '$accented/ready'"
  grep -q 'Caf\\u00e9' "$LOGS_DIR/llamacpp-q4.json" || fail "the record does not escape the é"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 1 ]] || fail "exited $status; stdout: $output"
  [[ "$output" == *"record kept"* ]] || fail "no 'record kept' row: $output"
  alive "$PID" || fail "pid $PID was killed without proof"
  assert_file_exists "$LOGS_DIR/llamacpp-q4.json"
  assert_file_exists "$LOGS_DIR/llamacpp-q4.pid"
}

@test "fallback removes the record of a PID reused within the same second by another program" {
  start_fake
  local record="$LOGS_DIR/llamacpp-q4.json" created
  kill -KILL "$PID"
  wait_gone "$PID"
  sleep 300 &
  STRANGER=$!
  # The stranger's own start second, so only its arguments tell it apart.
  created="$("$REPO_ROOT/.venv/bin/python" -c 'import psutil,sys; print(psutil.Process(int(sys.argv[1])).create_time())' "$STRANGER")"
  sed -i.bak "s/^  \"pid\": [0-9]*,/  \"pid\": $STRANGER,/; s/^  \"create_time\": [0-9.]*,/  \"create_time\": $created,/" "$record"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  alive "$STRANGER" || fail "the stranger $STRANGER was killed"
  [[ "$output" == *"left alone"* ]] || fail "no 'left alone' row: $output"
  assert_file_not_exists "$record"
}

@test "fallback with the Docker engine down: a FAILED container row and exit 1, never a silent 0" {
  command -v docker >/dev/null || fail "the docker CLI is not installed"
  write_fake_env
  echo "KITTY_COMPOSE_ENABLED=true" >>"$ENV_FILE"
  DOCKER_HOST="unix://$BATS_TEST_TMPDIR/no-such-docker.sock" run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 1 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  [[ "$output" == *"container"*"FAILED"*"cannot list containers"* ]] || fail "no FAILED container row: $output"
}

@test "fallback with a Docker engine that never answers: FAILED within its deadline (no timeout(1) needed)" {
  command -v docker >/dev/null || fail "the docker CLI is not installed"
  write_fake_env
  echo "KITTY_COMPOSE_ENABLED=true" >>"$ENV_FILE"
  local port started
  port="$(free_port)"
  # A listener that accepts and never answers: docker ps waits on it forever.
  python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(); time.sleep(60)' "$port" &
  STRANGER=$!
  sleep 0.5
  started="$(date +%s)"
  DOCKER_HOST="tcp://127.0.0.1:$port" run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE" --deadline 2
  [[ "$status" -eq 1 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  [[ "$output" == *"container"*"FAILED"* ]] || fail "no FAILED container row: $output"
  [[ $(($(date +%s) - started)) -le 8 ]] || fail "took $(($(date +%s) - started)) s with --deadline 2"
}

@test "fallback leaves no component wanted up, so a supervisor brings nothing back" {
  start_fake
  grep -q '"llama:q4"' "$LOGS_DIR/desired.json" || fail "start wrote no intent: $(cat "$LOGS_DIR/desired.json")"
  run --separate-stderr "$FALLBACK" --env-file "$ENV_FILE"
  [[ "$status" -eq 0 ]] || fail "exited $status; stdout: $output; stderr: $stderr"
  assert_file_contains "$LOGS_DIR/desired.json" '"components": {}'
  [[ "$(ls -a "$LOGS_DIR" | grep -c 'desired.json.fallback')" -eq 0 ]] || fail "temporary intent file left"
}
