"""`kitty-ops emergency-stop`: everything the stack owns, gone within one deadline.

No graceful shutdown: SIGKILL to the process group of every recorded llama server and native
service that still proves to be ours (start time and arguments as recorded), `docker kill` then
`docker rm -f` of the containers carrying the stack's compose project label, the PID files
removed, and the ports checked. Nothing else is touched: a PID that now belongs to another
program, or a container of another project, is left alone and reported. The processes and the
containers are handled at the same time; the project lock is not waited for (a hung start may
hold it).

ops/scripts/emergency-stop.sh falls back to a pure-bash version of this when Python cannot run.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import threading
import time

from kitty_ops.config import Settings
from kitty_ops.containers.compose import PROJECT_LABEL
from kitty_ops.host import desired, lock, ports, procs, records
from kitty_ops.runbooks import Runbook

DEFAULT_DEADLINE = 15.0


@dataclasses.dataclass
class Action:
    kind: str  # process | container | port | note
    target: str
    result: str  # killed | gone | left alone | removed | free | BUSY | FAILED
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result not in ("BUSY", "FAILED")


@dataclasses.dataclass
class Report:
    actions: list[Action]
    seconds: float
    deadline: float

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.actions)

    @property
    def runbook(self) -> Runbook:
        return Runbook.EMERGENCY_STOP


def run(settings: Settings, deadline: float = DEFAULT_DEADLINE) -> Report:
    began = time.monotonic()
    end = began + deadline
    _intend_down(settings)
    process_actions: list[Action] = []
    container_actions: list[Action] = []
    watched_ports: set[tuple[str, int]] = set()
    jobs = [threading.Thread(target=lambda: process_actions.extend(_processes(settings, end, watched_ports)),
                             daemon=True),
            threading.Thread(target=lambda: container_actions.extend(_containers(settings, end, watched_ports)),
                             daemon=True)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(max(0.0, end - time.monotonic()))
    actions = process_actions + container_actions
    if any(job.is_alive() for job in jobs):
        actions.append(Action("note", "deadline", "FAILED", f"not finished within {deadline:g}s"))
    actions += _ports(watched_ports, end)
    return Report(actions, time.monotonic() - began, deadline)


def _intend_down(settings: Settings) -> None:
    """Everything "down" in the operator's intent (kitty_ops.host.desired) before anything is
    killed, so that a supervisor brings nothing back. The project lock is taken when it is free
    and not waited for (a hung start may hold it); the write is an atomic rename either way."""
    ids = set(desired.load(settings.logs_dir))
    for prefix, tier in ((records.LLAMA, "llama"), (records.SERVICE, "native")):
        ids |= {f"{tier}:{name}" for name in records.recorded_names(settings.logs_dir, prefix)}
    ids |= {f"llama:{s.name}" for s in settings.enabled_servers}
    try:
        try:
            with lock.held(lock.project_lock(settings.logs_dir), 0, "emergency-stop"):
                desired.mark(settings.logs_dir, sorted(ids), desired.DOWN, "emergency-stop")
        except lock.LockBusy:
            desired.mark(settings.logs_dir, sorted(ids), desired.DOWN, "emergency-stop")
    except OSError:
        pass  # a read-only or full disk must not stop an emergency stop


# --------------------------------------------------------------------------------- processes

def _processes(settings: Settings, end: float, watched: set[tuple[str, int]]) -> list[Action]:
    targets = []
    actions = []
    for prefix in (records.LLAMA, records.SERVICE):
        for name in records.recorded_names(settings.logs_dir, prefix):
            label = f"{prefix}-{name}"
            try:
                record = records.load(settings.logs_dir, name, prefix)
            except records.BadRecord as exc:
                actions.append(Action("process", label, "left alone", f"unreadable record, PID unproven: {exc}"))
                records.remove(settings.logs_dir, name, prefix)
                continue
            if record is None:  # a bare PID file: nothing proves whose that PID is
                pid = records.bare_pid(settings.logs_dir, name, prefix)
                actions.append(Action("process", label, "left alone", f"pid {pid}: a PID file without a record "
                                                                      "proves nothing"))
                records.remove(settings.logs_dir, name, prefix)
                continue
            if record.port:
                watched.add(("127.0.0.1", record.port))
            targets.append((label, name, prefix, record))
    for label, name, prefix, record in targets:
        try:
            sent = procs.signal_group(record.identity, signal.SIGKILL)
        except procs.NotOurs:
            actions.append(Action("process", label, "left alone",
                                  f"pid {record.pid} now belongs to another process"))
            records.remove(settings.logs_dir, name, prefix)
            continue
        except PermissionError as exc:
            actions.append(Action("process", label, "FAILED", f"pid {record.pid}: {exc.strerror}"))
            continue
        if not sent:
            actions.append(Action("process", label, "gone", f"pid {record.pid} had already exited"))
            records.remove(settings.logs_dir, name, prefix)
            continue
        targets_gone = procs.wait_gone(record.identity, end)
        if targets_gone:
            actions.append(Action("process", label, "killed", f"SIGKILL to process group {record.pid}"))
            records.remove(settings.logs_dir, name, prefix)
        else:
            actions.append(Action("process", label, "FAILED",
                                  f"pid {record.pid} survived SIGKILL (uninterruptible in the kernel?)"))
    return actions


# -------------------------------------------------------------------------------- containers

def _docker(argv: list[str], end: float) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["docker", *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=max(0.5, end - time.monotonic()))
    except (OSError, subprocess.TimeoutExpired):
        return None


def _containers(settings: Settings, end: float, watched: set[tuple[str, int]]) -> list[Action]:
    project = settings.compose.project
    listed = _docker(["ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={project}"], end)
    if listed is None or listed.returncode != 0:
        if not settings.compose_enabled:
            return []
        why = "docker is not installed or did not answer" if listed is None else listed.stderr.strip()[:200]
        return [Action("container", f"project {project}", "FAILED", f"cannot list containers: {why}")]
    ids = listed.stdout.split()
    if not ids:
        return [Action("container", f"project {project}", "gone", "no container of the project")]
    names = {}
    inspected = _docker(["inspect", *ids], end)
    if inspected is not None and inspected.returncode == 0:
        for item in json.loads(inspected.stdout or "[]"):
            names[item["Id"]] = item.get("Name", "").lstrip("/")
            for bindings in ((item.get("HostConfig") or {}).get("PortBindings") or {}).values():
                for binding in bindings or []:
                    if str(binding.get("HostPort", "")).isdigit():
                        host = binding.get("HostIp") or "127.0.0.1"
                        watched.add(("127.0.0.1" if host in ("0.0.0.0", "::") else host, int(binding["HostPort"])))
    killed = _docker(["kill", *ids], end)  # SIGKILL; a container already stopped just errors
    removed = _docker(["rm", "--force", *ids], end)
    left = _docker(["ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={project}"], end)
    remaining = set(left.stdout.split()) if left is not None and left.returncode == 0 else set(ids)
    actions = []
    for cid in ids:
        name = names.get(cid, cid[:12])
        if cid in remaining:
            detail = (removed.stderr.strip()[:200] if removed is not None else "docker rm did not answer in time")
            actions.append(Action("container", name, "FAILED", detail))
        else:
            how = "docker kill, rm -f" if killed is not None and killed.returncode == 0 else "rm -f"
            actions.append(Action("container", name, "removed", how + " (volumes kept)"))
    return actions


# ------------------------------------------------------------------------------------- ports

def _ports(watched: set[tuple[str, int]], end: float) -> list[Action]:
    """Each port the stack held, free again? Killed listeners release at once, docker-proxy a
    moment later, so a busy port is re-checked until the deadline."""
    actions = []
    for host, port in sorted(watched, key=lambda hp: hp[1]):
        while not ports.is_free(host, port) and time.monotonic() < end:
            time.sleep(0.05)
        if ports.is_free(host, port):
            actions.append(Action("port", f"{host}:{port}", "free"))
        else:
            who = ", ".join(h.describe() for h in ports.holders(port)) or "an unidentified process"
            actions.append(Action("port", f"{host}:{port}", "BUSY", f"held by {who}; not ours, left alone"))
    return actions

