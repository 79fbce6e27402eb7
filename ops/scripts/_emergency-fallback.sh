#!/usr/bin/env bash
# The emergency stop without Python, for when the virtualenv is broken. It does what
# `kitty-ops emergency-stop` does, with the same rule: a PID is killed only when its process
# start time (to the second) and the arguments at the end of its command line match its identity
# record, and a record is removed only when its process is gone or provably another program;
# containers only by the stack's compose project label. The one ops script with logic in it, on
# purpose: it must not depend on anything that can be broken. Written for bash 3.2 and BSD
# userland (macOS) as much as for Linux.
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

# The same commands on macOS (BSD ps, bash 3.2, no timeout(1)) and Linux (procps): the fields
# read from ps are locale-free (etime, args, stat) and LC_ALL=C keeps them so.
export LC_ALL=C

# with_deadline SECONDS CMD...: run CMD; SIGTERM it after SECONDS, SIGKILL 2 s later; 124 then.
with_deadline() {
  local tenths=$(($1 * 10)) pid waited=0
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [[ "$waited" -eq "$tenths" ]]; then kill -TERM "$pid" 2>/dev/null; fi
    if [[ "$waited" -ge $((tenths + 20)) ]]; then kill -KILL "$pid" 2>/dev/null; break; fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$pid"
  local status=$?
  [[ "$waited" -lt "$tenths" ]] || return 124
  return "$status"
}

# running PID: alive and not a zombie (a killed orphan may wait a while for init to reap it).
running() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

# started_at PID: the process's start as Unix seconds (to 1 s), from its elapsed time
# ([[dd-]hh:]mm:ss on both BSD and procps ps), so no locale-dependent date is parsed.
started_at() {
  local etime now
  etime="$(ps -o etime= -p "$1" 2>/dev/null | tr -d ' ')" || return 1
  now="$(date +%s)" || return 1
  [[ -n "$etime" ]] || return 1
  awk -v e="$etime" -v now="$now" 'BEGIN {
    n = split(e, dh, "-"); days = (n == 2) ? dh[1] : 0; hms = dh[n]
    k = split(hms, f, ":"); s = 0; for (i = 1; i <= k; i++) s = s * 60 + f[i]
    if (hms !~ /^[0-9:]+$/ || k < 2) exit 1
    print now - (days * 86400 + s) }'
}

# record_field RECORD KEY: a number field of an identity record (written by kitty-ops, indent 2).
record_field() {
  sed -n "s/^  \"$2\": \([0-9.][0-9.]*\),\$/\1/p" "$1"
}

# recorded_args RECORD: the arguments kitty-ops passed (argv without the binary), space-joined.
recorded_args() {
  sed -n '/^  "argv": \[/,/^  \],*$/p' "$1" | sed -n 's/^    "\(.*\)",*$/\1/p' | sed '1d' \
    | sed 's/\\"/"/g; s/\\\\/\\/g' | tr '\n' ' ' | sed 's/ $//'
}

# proof RECORD: "ours PID", "gone" (not running: the record may go), "foreign PID" (the PID now
# runs something else: the record may go) or "unproven PID WHY" (alive, but ps could not be read:
# neither signal it nor remove its record).
proof() {
  local pid created started args recorded
  pid="$(record_field "$1" pid)"
  created="$(record_field "$1" create_time)"
  if [[ -z "$pid" || -z "$created" ]]; then echo "unproven ? damaged record"; return; fi
  running "$pid" || { echo "gone"; return; }
  started="$(started_at "$pid")" || { echo "unproven $pid cannot read its start time"; return; }
  args="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || { echo "unproven $pid cannot read its command line"; return; }
  recorded="$(recorded_args "$1")"
  # A PID reused by another program: it started at another second, or (ASCII arguments, which ps
  # shows exactly under LC_ALL=C) it runs other arguments. A non-ASCII argument ("\u00e9" in the
  # record, mangled by ps) cannot be compared: such a process is left alone and its record kept.
  # A script's interpreter may stand before the recorded arguments, as in kitty-ops itself.
  if ! awk -v a="$started" -v b="$created" 'BEGIN {d = a - b; exit !(d < 2 && d > -2)}'; then
    echo "foreign $pid"
  elif [[ "$args" == *" $recorded" || "$args" == "$recorded" ]]; then
    echo "ours $pid"
  elif [[ "$recorded" == *'\u'* || "$recorded" == *[![:print:]]* ]]; then
    echo "unproven $pid its recorded arguments have characters ps cannot show for comparison"
  else
    echo "foreign $pid"
  fi
}

# The operator's intent first: nothing is wanted up any more, so a supervisor still running
# brings nothing back (kitty_ops/host/desired.py reads a file without components as "no intent").
if [[ -d "$logs_dir" ]]; then
  intent_tmp="$logs_dir/.desired.json.fallback.$$"
  if (umask 077 && printf '{"schema": 1, "components": {}}\n' >"$intent_tmp"); then
    mv -f "$intent_tmp" "$logs_dir/desired.json"
  else
    rm -f "$intent_tmp"
  fi
fi

ports=()  # the llama servers' ports, read before their records go
for record in "$logs_dir"/llamacpp-*.json; do
  [[ -f "$record" ]] && ports+=("$(record_field "$record" port)")
done

for record in "$logs_dir"/llamacpp-*.json "$logs_dir"/service-*.json; do
  [[ -f "$record" ]] || continue
  name="$(basename "$record" .json)"
  read -r verdict pid reason <<<"$(proof "$record")"
  case "$verdict" in
    ours)
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
      echo "process    $name  killed      SIGKILL to process group $pid" ;;
    gone)
      echo "process    $name  gone        not running; record removed" ;;
    foreign)
      echo "process    $name  left alone  pid $pid now runs another program; record removed" ;;
    *)
      echo "process    $name  FAILED      pid $pid left alone and its record kept: $reason"
      failed=1
      continue ;;
  esac
  rm -f "$record" "${record%.json}.pid"
done

compose_enabled="$(setting KITTY_COMPOSE_ENABLED true)"
if [[ "$compose_enabled" =~ ^([Ff]alse|0|[Nn]o|[Oo]ff)$ ]] || ! command -v docker >/dev/null; then
  :  # no container tier here: nothing to list
elif ! ids="$(with_deadline "$deadline" docker ps --all --quiet --filter "label=com.docker.compose.project=$project")"; then
  echo "container  project $project  FAILED  cannot list containers (is the Docker engine or Docker Desktop running?)"
  failed=1
elif [[ -n "$ids" ]]; then
  # shellcheck disable=SC2086  # one ID per word, by design
  with_deadline "$deadline" docker kill $ids >/dev/null 2>&1
  # shellcheck disable=SC2086
  with_deadline "$deadline" docker rm --force $ids >/dev/null 2>&1
  if ! left="$(with_deadline "$deadline" docker ps --all --quiet --filter "label=com.docker.compose.project=$project")" \
      || [[ -n "$left" ]]; then
    echo "container  project $project  FAILED  some containers remain (docker ps --filter label=com.docker.compose.project=$project)"
    failed=1
  else
    echo "container  project $project  removed  docker kill, rm -f (volumes kept)"
  fi
fi

# ${ports[@]+...}: bash 3.2 (macOS /bin/bash) aborts on an empty array under set -u.
for record_port in ${ports[@]+"${ports[@]}"}; do
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
