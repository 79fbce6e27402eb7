"""`kitty-ops service install | uninstall | status`: `kitty-ops supervise --stop-on-exit` as a
launchd job (macOS) or a systemd unit (Linux), so that the stack comes up at boot (or login) and
the supervisor itself is restarted when it dies.

Rendering is pure (`render_plist`, `render_unit`: a Spec in, the file's bytes out) and
unit-tested; the side effects are the file write and the service manager's argv (`launchctl
bootstrap/bootout/print`, `systemctl enable --now/disable --now/show/daemon-reload`), run through
an injected runner, never a shell.

Choices, each for a reason:
- The supervisor runs with --stop-on-exit: stopping the service stops the stack (drained), and
  the stop's deadline is the service manager's stop timeout: TimeoutStopSec / ExitTimeOut are
  longer than the longest drain plus the stop grace plus compose's stop.
- systemd KillMode=process: on stop only the supervisor gets SIGTERM and stops the servers itself,
  gracefully; and when the supervisor crashes, systemd leaves the servers running (they are in
  their own sessions) so that the restarted supervisor adopts them instead of reloading every
  model. (`mixed` would SIGKILL the servers whenever the supervisor dies.) launchd:
  AbandonProcessGroup for the same reason.
- Restart on failure only (systemd Restart=on-failure, launchd KeepAlive SuccessfulExit=false):
  a supervisor that exits 0 was stopped on purpose. A start limit (StartLimitBurst in
  StartLimitIntervalSec; launchd's ThrottleInterval) keeps a supervisor that cannot start from
  looping fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import plistlib
import re
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from kitty_ops.config import Settings
from kitty_ops.llama.lifecycle import KILL_WAIT

# Homebrew's bin first (Apple Silicon, then Intel), then the system's: launchd starts jobs with
# a bare PATH, without which llama-server and docker are not found.
MACOS_PATH = "/opt/homebrew/bin:/opt/homebrew/sbin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
LINUX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMPOSE_STOP_MARGIN = 60.0  # seconds for `docker compose` to stop and remove the containers
RESTART_SEC = 5
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL = 600
THROTTLE_INTERVAL = 10  # launchd: at least this many seconds between two starts of the job

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


@dataclasses.dataclass(frozen=True)
class Spec:
    project_dir: Path
    kitty_ops: Path  # absolute: the venv's console script
    env_file: Path
    logs_dir: Path
    stop_timeout: int  # seconds the service manager gives the supervisor to stop the stack
    system: bool = False  # a system unit / LaunchDaemon instead of the user's
    user: str = ""  # for a system unit: whom the supervisor runs as
    path_env: str = LINUX_PATH

    @property
    def slug(self) -> str:
        """One service per project: the directory's name plus a short hash of its full path."""
        base = re.sub(r"[^a-z0-9]+", "-", self.project_dir.name.lower()).strip("-") or "project"
        digest = hashlib.sha256(str(self.project_dir).encode()).hexdigest()[:6]
        return f"{base[:32]}-{digest}"

    @property
    def label(self) -> str:  # launchd
        return f"com.kitty-ops.supervise.{self.slug}"

    @property
    def unit(self) -> str:  # systemd
        return f"kitty-ops-supervise-{self.slug}.service"

    @property
    def argv(self) -> list[str]:
        return [str(self.kitty_ops), "supervise", "--stop-on-exit", "--env-file", str(self.env_file)]


def spec_for(settings: Settings, kitty_ops: Path, system: bool = False, user: str = "",
             macos: bool = False) -> Spec:
    drain = max([s.drain_timeout for s in settings.enabled_servers] + [settings.drain_timeout])
    stop_timeout = int(drain + settings.stop_grace + KILL_WAIT + COMPOSE_STOP_MARGIN) + 1
    return Spec(settings.project_dir, kitty_ops.absolute(), settings.env_file.absolute(),
                settings.logs_dir.absolute(), stop_timeout, system, user,
                MACOS_PATH if macos else LINUX_PATH)


# ------------------------------------------------------------------------------- rendering

def render_plist(spec: Spec) -> bytes:
    """The launchd job (launchd.plist(5))."""
    log = str(spec.logs_dir / "supervise.log")
    job = {
        "Label": spec.label,
        "ProgramArguments": spec.argv,
        "WorkingDirectory": str(spec.project_dir),
        "EnvironmentVariables": {"KITTY_PROJECT_DIR": str(spec.project_dir), "PATH": spec.path_env,
                                 "PYTHONUNBUFFERED": "1"},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL,
        "ExitTimeOut": spec.stop_timeout,
        "AbandonProcessGroup": True,
        "ProcessType": "Interactive",  # inference must not be throttled like a background job
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    if spec.system and spec.user:
        job["UserName"] = spec.user
    return plistlib.dumps(job, sort_keys=False)


def _quote(arg: str) -> str:
    """One ExecStart/Environment word for systemd: specifiers (%) doubled, quoted when needed."""
    arg = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec: Spec) -> str:
    """The systemd unit (systemd.service(5))."""
    log = str(spec.logs_dir / "supervise.log").replace("%", "%%")
    lines = [
        "# Written by `kitty-ops service install`; `kitty-ops service uninstall` removes it.",
        "[Unit]",
        f"Description=kitty-ops supervisor for {str(spec.project_dir).replace('%', '%%')}",
        f"Documentation=file://{str(spec.project_dir / 'ops' / 'runbooks' / 'service.md').replace('%', '%%')}",
        "After=network-online.target docker.service",
        "Wants=network-online.target",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=simple",
    ]
    if spec.system and spec.user:
        lines.append(f"User={spec.user}")
    lines += [
        f"WorkingDirectory={_quote(str(spec.project_dir))}",
        f"Environment={_quote('KITTY_PROJECT_DIR=' + str(spec.project_dir))}",
        f"Environment={_quote('PATH=' + spec.path_env)}",
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart=" + " ".join(_quote(a) for a in spec.argv),
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "KillMode=process",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={spec.stop_timeout}",
        f"StandardOutput=append:{log}",
        f"StandardError=append:{log}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if spec.system else 'default.target'}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- placing

def file_path(spec: Spec, macos: bool, home: Path) -> Path:
    if macos:
        base = Path("/Library/LaunchDaemons") if spec.system else home / "Library" / "LaunchAgents"
        return base / f"{spec.label}.plist"
    base = Path("/etc/systemd/system") if spec.system else home / ".config" / "systemd" / "user"
    return base / spec.unit


def content(spec: Spec, macos: bool) -> bytes:
    return render_plist(spec) if macos else render_unit(spec).encode()


def _systemctl(spec: Spec, *args: str) -> list[str]:
    return ["systemctl", *([] if spec.system else ["--user"]), *args]


def _domain(spec: Spec, uid: int) -> str:
    return "system" if spec.system else f"gui/{uid}"


def install_plan(spec: Spec, macos: bool, home: Path, uid: int, current: bytes | None,
                 loaded: bool) -> list[list[str]]:
    """Pure: the service-manager commands an install runs, given what is there now (the file's
    current bytes, whether the job is loaded). Installing twice changes nothing."""
    same = current == content(spec, macos)
    path = str(file_path(spec, macos, home))
    if macos:
        if same and loaded:
            return []
        reload = [["launchctl", "bootout", f"{_domain(spec, uid)}/{spec.label}"]] if loaded else []
        return reload + [["launchctl", "bootstrap", _domain(spec, uid), path]]
    steps = [] if same else [_systemctl(spec, "daemon-reload")]
    steps.append(_systemctl(spec, "enable", "--now", spec.unit))
    if not same and loaded:
        steps.append(_systemctl(spec, "restart", spec.unit))  # the running one has the old file
    return steps


def uninstall_plan(spec: Spec, macos: bool, uid: int, present: bool, loaded: bool) -> list[list[str]]:
    if macos:
        return [["launchctl", "bootout", f"{_domain(spec, uid)}/{spec.label}"]] if loaded else []
    return [_systemctl(spec, "disable", "--now", spec.unit)] if (present or loaded) else []


def status_argv(spec: Spec, macos: bool, uid: int) -> list[str]:
    if macos:
        return ["launchctl", "print", f"{_domain(spec, uid)}/{spec.label}"]
    return _systemctl(spec, "show", spec.unit, "--property",
                      "LoadState,ActiveState,SubState,MainPID,ExecMainStatus,NRestarts,UnitFileState,Result")


def parse_status(text: str, macos: bool) -> dict[str, str]:
    """Pure: `systemctl show` (KEY=VALUE lines) or `launchctl print` (`key = value` lines) to a
    small dict: loaded, state, pid, last_exit (and restarts for systemd)."""
    if macos:
        found = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition(" = ")
            if sep and key in ("state", "pid", "last exit code", "runs") and key not in found:
                found[key] = value.strip()
        return {"loaded": "yes" if text.strip() else "no", "state": found.get("state", "not loaded"),
                "pid": found.get("pid", ""), "last_exit": found.get("last exit code", ""),
                "runs": found.get("runs", "")}
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {"loaded": "yes" if values.get("LoadState") == "loaded" else values.get("LoadState", "no"),
            "state": f"{values.get('ActiveState', '?')} ({values.get('SubState', '?')})",
            "pid": "" if values.get("MainPID") in (None, "0") else values["MainPID"],
            "last_exit": values.get("ExecMainStatus", ""), "restarts": values.get("NRestarts", ""),
            "enabled": values.get("UnitFileState", ""), "result": values.get("Result", "")}


# -------------------------------------------------------------------------------- doing it

@dataclasses.dataclass
class Done:
    ok: bool
    path: Path
    steps: list[tuple[list[str], int, str]]  # argv, exit code, last line of its output
    message: str = ""


def run_argv(argv: Sequence[str]) -> subprocess.CompletedProcess:
    """`systemctl disable --now` waits for the supervisor to stop the stack (TimeoutStopSec)."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: {exc}")


def _loaded(spec: Spec, macos: bool, uid: int, run: Runner) -> bool:
    done = run(status_argv(spec, macos, uid))
    if done.returncode != 0:
        return False
    if macos:
        return True
    return parse_status(done.stdout, macos).get("state", "").split(" ")[0] in ("active", "activating", "reloading")


def _run_steps(steps: list[list[str]], run: Runner) -> tuple[bool, list[tuple[list[str], int, str]]]:
    results = []
    for argv in steps:
        done = run(argv)
        last = ((done.stderr or "") + (done.stdout or "")).strip().splitlines()[-1:] or [""]
        results.append((argv, done.returncode, last[0][:300]))
        if done.returncode != 0:
            return False, results
    return True, results


def install(spec: Spec, macos: bool, home: Path, uid: int, run: Runner = run_argv) -> Done:
    path = file_path(spec, macos, home)
    try:
        current = path.read_bytes()
    except OSError:
        current = None
    steps = install_plan(spec, macos, home, uid, current, _loaded(spec, macos, uid, run))
    wanted = content(spec, macos)
    if current != wanted:
        spec.logs_dir.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        # No secret in it (paths only); service managers want it readable by them.
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(wanted)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    ok, results = _run_steps(steps, run)
    message = ("installed and started" if current != wanted else "already installed and running") if ok \
        else "the service manager refused"
    return Done(ok, path, results, message)


def uninstall(spec: Spec, macos: bool, home: Path, uid: int, run: Runner = run_argv) -> Done:
    path = file_path(spec, macos, home)
    present = path.exists()
    ok, results = _run_steps(uninstall_plan(spec, macos, uid, present, _loaded(spec, macos, uid, run)), run)
    if ok and present:
        path.unlink()
        if not macos:
            ok, more = _run_steps([_systemctl(spec, "daemon-reload")], run)
            results += more
    message = ("stopped and removed" if present else "not installed") if ok else "the service manager refused"
    return Done(ok, path, results, message)


def manager_status(spec: Spec, macos: bool, uid: int, run: Runner = run_argv) -> dict[str, str]:
    done = run(status_argv(spec, macos, uid))
    if done.returncode != 0:
        return {"loaded": "no", "state": "not loaded", "pid": "", "last_exit": ""}
    return parse_status(done.stdout, macos)
