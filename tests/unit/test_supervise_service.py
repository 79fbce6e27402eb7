"""The launchd plist and the systemd unit of `kitty-ops service` (pure renderers), checked by
the real tools where they exist here (systemd-analyze verify; plistlib plus the keys and types of
launchd.plist(5), since launchd cannot run here), and the install/uninstall plans with a fake
service manager."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kitty_ops.supervise import service

REPO = Path(__file__).resolve().parents[2]


def spec(tmp_path: Path, system: bool = False, project: str = "kitty", macos: bool = False) -> service.Spec:
    root = tmp_path / project
    root.mkdir(parents=True, exist_ok=True)
    binary = REPO / ".venv" / "bin" / "kitty-ops"
    return service.Spec(root, binary, root / ".env", root / ".logs", 136, system, "kitty" if system else "",
                        service.MACOS_PATH if macos else service.LINUX_PATH)


# launchd.plist(5): the keys written, with their types.
LAUNCHD_KEYS = {"Label": str, "ProgramArguments": list, "WorkingDirectory": str, "EnvironmentVariables": dict,
                "RunAtLoad": bool, "KeepAlive": (bool, dict), "ThrottleInterval": int, "ExitTimeOut": int,
                "AbandonProcessGroup": bool, "ProcessType": str, "StandardOutPath": str,
                "StandardErrorPath": str, "UserName": str}


def test_plist_is_a_valid_launchd_job(tmp_path):
    s = spec(tmp_path, macos=True)
    job = plistlib.loads(service.render_plist(s))
    assert set(job) <= set(LAUNCHD_KEYS)
    for key, value in job.items():
        assert isinstance(value, LAUNCHD_KEYS[key]), key
    assert job["Label"] == s.label and job["Label"].startswith("com.kitty-ops.supervise.kitty-")
    assert job["ProgramArguments"] == [str(s.kitty_ops), "supervise", "--stop-on-exit", "--env-file", str(s.env_file)]
    assert all(Path(p).is_absolute() for p in (job["ProgramArguments"][0], job["WorkingDirectory"],
                                                job["StandardOutPath"], job["StandardErrorPath"]))
    assert job["StandardOutPath"] == str(s.logs_dir / "supervise.log")
    assert job["EnvironmentVariables"]["KITTY_PROJECT_DIR"] == str(s.project_dir)
    assert job["EnvironmentVariables"]["PATH"].startswith("/opt/homebrew/bin:")
    assert job["RunAtLoad"] is True and job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ThrottleInterval"] >= 10 and job["ExitTimeOut"] == 136
    assert job["ProcessType"] in ("Background", "Standard", "Adaptive", "Interactive")
    assert job["AbandonProcessGroup"] is True  # a crashed supervisor leaves the servers to be adopted
    assert "UserName" not in job
    assert plistlib.loads(service.render_plist(spec(tmp_path, system=True, macos=True)))["UserName"] == "kitty"


def unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_unit_restarts_on_failure_and_lets_the_supervisor_stop_the_servers(tmp_path):
    s = spec(tmp_path)
    values = unit_values(service.render_unit(s))
    assert values["ExecStart"] == [f"{s.kitty_ops} supervise --stop-on-exit --env-file {s.env_file}"]
    assert values["Restart"] == ["on-failure"] and int(values["RestartSec"][0]) > 0
    assert values["StartLimitBurst"] and values["StartLimitIntervalSec"]
    assert values["KillMode"] == ["process"]
    assert int(values["TimeoutStopSec"][0]) == 136
    assert f"KITTY_PROJECT_DIR={s.project_dir}" in values["Environment"]
    assert values["StandardOutput"] == [f"append:{s.logs_dir}/supervise.log"]
    assert values["WantedBy"] == ["default.target"] and "User" not in values
    system = unit_values(service.render_unit(spec(tmp_path, system=True)))
    assert system["WantedBy"] == ["multi-user.target"] and system["User"] == ["kitty"]


def test_stop_timeout_is_longer_than_drain_plus_grace(tmp_path):
    from kitty_ops import config
    (tmp_path / ".env").write_text("KITTY_DRAIN_TIMEOUT=90\nKITTY_STOP_GRACE=20\nLLAMACPP_SERVERS=q4\n")
    settings, _ = config.load_settings(tmp_path / ".env", environ={"KITTY_PROJECT_DIR": str(tmp_path)})
    s = service.spec_for(settings, Path("/opt/kitty/.venv/bin/kitty-ops"))
    assert s.stop_timeout > 60 + 20  # q4's own drain (60 s default) plus the grace
    assert s.stop_timeout > settings.server("q4").drain_timeout + settings.stop_grace


def test_paths_with_spaces_and_percent_signs_are_quoted(tmp_path):
    s = spec(tmp_path, project="Application Support 100%")
    text = service.render_unit(s)
    line = next(l for l in text.splitlines() if l.startswith("ExecStart="))
    assert '"' in line and "100%%" in line


def test_each_project_gets_its_own_service_name(tmp_path):
    a, b = spec(tmp_path / "a"), spec(tmp_path / "b")
    assert a.unit != b.unit and a.label != b.label


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS has no systemd (the plist tests cover launchd)")
@pytest.mark.parametrize("system", [False, True])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, system):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: make system-deps installs Debian's systemd"
    s = spec(tmp_path, system=system)
    unit = tmp_path / s.unit
    unit.write_text(service.render_unit(s).replace("User=kitty", "User=root"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even when it ignores a line it cannot parse: its output must not name the file.
    complaints = [l for l in (done.stdout + done.stderr).splitlines() if unit.name in l]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


class FakeManager:
    def __init__(self, loaded: bool = False, fail: str = ""):
        self.calls: list[list[str]] = []
        self.loaded = loaded
        self.fail = fail

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if "show" in argv or "print" in argv:
            out = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=42\n" if self.loaded else ""
            return subprocess.CompletedProcess(argv, 0 if (self.loaded or "show" in argv) else 113, out, "")
        if self.fail and self.fail in argv:
            return subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus")
        if "enable" in argv or "bootstrap" in argv:
            self.loaded = True
        if "disable" in argv or "bootout" in argv:
            self.loaded = False
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_install_twice_is_idempotent_and_uninstall_removes(tmp_path):
    s, home, manager = spec(tmp_path), tmp_path / "home", FakeManager()
    first = service.install(s, False, home, 1000, manager)
    path = home / ".config" / "systemd" / "user" / s.unit
    assert first.ok and path.read_text() == service.render_unit(s)
    assert [c for c in manager.calls if "show" not in c] == [
        ["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", s.unit]]
    manager.calls.clear()
    second = service.install(s, False, home, 1000, manager)
    assert second.ok and [c for c in manager.calls if "show" not in c] == [
        ["systemctl", "--user", "enable", "--now", s.unit]]  # nothing reloaded or restarted
    gone = service.uninstall(s, False, home, 1000, manager)
    assert gone.ok and not path.exists()
    assert ["systemctl", "--user", "disable", "--now", s.unit] in manager.calls


def test_install_plan_on_macos_bootstraps_in_the_gui_domain(tmp_path):
    s, home = spec(tmp_path, macos=True), tmp_path / "home"
    path = str(home / "Library" / "LaunchAgents" / f"{s.label}.plist")
    assert service.install_plan(s, True, home, 501, None, False) == [["launchctl", "bootstrap", "gui/501", path]]
    same = service.content(s, True)
    assert service.install_plan(s, True, home, 501, same, True) == []  # installed twice: nothing
    assert service.install_plan(s, True, home, 501, b"old", True) == [
        ["launchctl", "bootout", f"gui/501/{s.label}"], ["launchctl", "bootstrap", "gui/501", path]]
    assert service.uninstall_plan(s, True, 501, True, True) == [["launchctl", "bootout", f"gui/501/{s.label}"]]
    system = spec(tmp_path, system=True, macos=True)
    assert service.file_path(system, True, home) == Path("/Library/LaunchDaemons") / f"{system.label}.plist"
    assert service.install_plan(system, True, home, 0, None, False)[0][:3] == ["launchctl", "bootstrap", "system"]


def test_a_refusing_service_manager_is_reported(tmp_path):
    s, home = spec(tmp_path), tmp_path / "home"
    done = service.install(s, False, home, 1000, FakeManager(fail="enable"))
    assert not done.ok and done.steps[-1][1] == 1 and "bus" in done.steps[-1][2]


def test_status_parsing():
    systemd = service.parse_status("LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=42\n"
                                   "ExecMainStatus=0\nNRestarts=1\nUnitFileState=enabled\n", False)
    assert systemd["loaded"] == "yes" and systemd["pid"] == "42" and systemd["restarts"] == "1"
    launchd = service.parse_status("gui/501/com.kitty-ops.supervise.x = {\n\tstate = running\n\tpid = 77\n"
                                   "\truns = 3\n\tlast exit code = 0\n}\n", True)
    assert (launchd["state"], launchd["pid"], launchd["last_exit"], launchd["runs"]) == ("running", "77", "0", "3")
