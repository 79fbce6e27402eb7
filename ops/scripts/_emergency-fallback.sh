#!/usr/bin/env bash
# The emergency stop without Python, for when the virtualenv is broken. It does what
# `kitty-ops emergency-stop` does, with the same rule: a PID is killed only when its process
# start time (to 0.05 s; 1 s on macOS) and the last argument of its command line match its
# identity record; containers only by the stack's compose project label. The one ops script
# with logic in it, on purpose: it must not depend on anything that can be broken.
set -uo pipefail

project_dir="${KITTY_PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
env_file="$project_dir/.env"
deadline=15
while [[ $# -gt 0 ]]; do
  case "$1" in
    --env-file) env_file="$2"; shift 2 ;;
    --deadline) deadline="${2%.*}"; shift 2 ;;
    *) shift ;;  # --json and the like: the fallback prints text only
  esac
done

# setting NAME DEFAULT: the last NAME=value of the env file, quotes removed.
setting() {
  local value=""
  [[ -f "$env_file" ]] && value="$(sed -n "s/^$1=//p" "$env_file" | tail -n 1)"
  value="${value%\"}"; value="${value#\"}"; value="${value%\'}"; value="${value#\'}"
  printf '%s' "${value:-$2}"
}
logs_dir="$(setting KITTY_LOGS_DIR .logs)"
[[ "$logs_dir" = /* ]] || logs_dir="$project_dir/$logs_dir"
project="$(setting KITTY_COMPOSE_PROJECT kitty)"
failed=0

# start_time PID: the process's start as Unix seconds (fractional on Linux), or nothing.
start_time() {
  if [[ -r "/proc/$1/stat" ]]; then
    local ticks btime
    ticks="$(sed 's/^.*) //' "/proc/$1/stat" | awk '{print $20}')"
    btime="$(awk '/^btime/ {print $2}' /proc/stat)"
    awk -v t="$ticks" -v b="$btime" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f", b + t / hz}'
  else
    date -j -f "%a %b %d %T %Y" "$(ps -o lstart= -p "$1" 2>/dev/null)" +%s 2>/dev/null
  fi
}

# running PID: alive and not a zombie (a killed orphan may wait a while for init to reap it).
running() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

# last_arg PID: the last argument of its command line.
last_arg() {
  if [[ -r "/proc/$1/cmdline" ]]; then
    tr '\0' '\n' <"/proc/$1/cmdline" | tail -n 1
  else
    ps -o args= -p "$1" | awk '{print $NF}'
  fi
}

# ours RECORD: the recorded process is alive and provably the one kitty-ops started.
ours() {
  local pid created started recorded_last tolerance
  pid="$(sed -n 's/^  "pid": \([0-9][0-9]*\),$/\1/p' "$1")"
  created="$(sed -n 's/^  "create_time": \([0-9.][0-9.]*\),$/\1/p' "$1")"
  recorded_last="$(sed -n '/^  "argv": \[/,/^  \],*$/p' "$1" | sed -n 's/^    "\(.*\)",*$/\1/p' | tail -n 1)"
  [[ -n "$pid" && -n "$created" ]] || return 1
  started="$(start_time "$pid")" || return 1
  [[ -n "$started" ]] || return 1
  tolerance=0.05
  [[ -r "/proc/$pid/stat" ]] || tolerance=1.5
  awk -v a="$started" -v b="$created" -v t="$tolerance" 'BEGIN {d = a - b; exit !(d < t && d > -t)}' || return 1
  [[ "$(last_arg "$pid")" == "$recorded_last" ]] || return 1
  echo "$pid"
}

ports=()  # the llama servers' ports, read before their records go
for record in "$logs_dir"/llamacpp-*.json; do
  [[ -f "$record" ]] && ports+=("$(sed -n 's/^  "port": \([0-9][0-9]*\),$/\1/p' "$record")")
done

for record in "$logs_dir"/llamacpp-*.json "$logs_dir"/service-*.json; do
  [[ -f "$record" ]] || continue
  name="$(basename "$record" .json)"
  if pid="$(ours "$record")"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 1 $((deadline * 20))); do
      running "$pid" || break
      sleep 0.05
    done
    if running "$pid"; then
      echo "process    $name  FAILED      pid $pid survived SIGKILL"
      failed=1
      continue
    fi
    echo "process    $name  killed      SIGKILL to process group $pid"
  else
    echo "process    $name  left alone  not running, or its PID no longer proves to be ours"
  fi
  rm -f "$record" "${record%.json}.pid"
done

if command -v docker >/dev/null; then
  ids="$(timeout "$deadline" docker ps --all --quiet --filter "label=com.docker.compose.project=$project")"
  if [[ -n "$ids" ]]; then
    # shellcheck disable=SC2086  # one ID per word, by design
    timeout "$deadline" docker kill $ids >/dev/null 2>&1
    # shellcheck disable=SC2086
    timeout "$deadline" docker rm --force $ids >/dev/null 2>&1
    if [[ -n "$(timeout "$deadline" docker ps --all --quiet --filter "label=com.docker.compose.project=$project")" ]]; then
      echo "container  project $project  FAILED  some containers remain (docker ps --filter label=com.docker.compose.project=$project)"
      failed=1
    else
      echo "container  project $project  removed  docker kill, rm -f (volumes kept)"
    fi
  fi
fi

for record_port in "${ports[@]}"; do
  [[ -n "$record_port" ]] || continue
  if (exec 3<>"/dev/tcp/127.0.0.1/$record_port") 2>/dev/null; then
    echo "port       127.0.0.1:$record_port  BUSY  still answers"
    failed=1
  fi
done

if [[ "$failed" -ne 0 ]]; then
  echo "emergency stop (bash fallback) incomplete: see ops/runbooks/emergency-stop.md" >&2
fi
exit "$failed"
