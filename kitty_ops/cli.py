"""The `kitty-ops` command: parse options, call one function, render its result, exit.

Each command reads configuration, calls into the package and hands the result to a renderer;
exit codes come from kitty_ops.exitcodes only.

The package's modules are loaded when a command first uses them (_lazy), not when the CLI
starts: `status` and `health` run every few seconds from scripts and cron, and importing every
command's modules would cost them more than their own work does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import re
import signal
import sys
import time
from pathlib import Path

import click

from kitty_ops import __version__, formats
from kitty_ops.exitcodes import DESCRIPTIONS, HEALTH_DESCRIPTIONS, Exit, Health
from kitty_ops.runbooks import Runbook


def _lazy(name: str):
    """Module `name`, loaded on the first use of one of its attributes (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


config = _lazy("kitty_ops.config")
render = _lazy("kitty_ops.render")
compose = _lazy("kitty_ops.containers.compose")
lock, probes, records = (_lazy(f"kitty_ops.host.{name}") for name in ("lock", "probes", "records"))
drain, gguf, validate = (_lazy(f"kitty_ops.llama.{name}") for name in ("drain", "gguf", "validate"))
stack = _lazy("kitty_ops.stack.run")

ENV_FILE_HELP = "Configuration file (default: .env in the project directory)."


def _env_file_here_or_before(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """`kitty-ops --env-file X status` means `kitty-ops status --env-file X`, as with
    `docker compose --env-file X ps`: one option, read wherever it stands."""
    before = ctx.find_root().params.get("env_file")
    if value is not None and before is not None and value != before:
        raise click.BadParameter(f"given twice, as {before} before the command and {value} after it")
    return value if value is not None else before


env_file_option = click.option(
    "--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    callback=_env_file_here_or_before, help=ENV_FILE_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (versioned).")

def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def _exit_table() -> str:
    return "\n".join(f"  {int(code):>3}  {text}" for code, text in DESCRIPTIONS.items())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=f"Exit codes:\n\n\b\n{_exit_table()}")
@click.version_option(__version__, prog_name="kitty-ops")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=ENV_FILE_HELP + " Accepted before the command as well as after it.")
def cli(env_file: Path | None) -> None:  # noqa: ARG001 (each command reads it through env_file_option)
    """Run the local AI stack: llama-server processes per model role, checked and supervised."""


@cli.command("validate")
@env_file_option
@json_option
def validate_cmd(env_file: Path | None, as_json: bool) -> None:
    """Check configuration, model files, the engine binary, ports and the compose stack's
    images; report every problem."""
    settings, problems = config.load_settings(env_file)
    report = validate.check(settings, problems)
    if settings.compose_enabled:  # the images compose resolves (no daemon needed)
        report.problems += compose.Compose(settings.compose).image_problems()
    (render.validate_json if as_json else render.validate_text)(report, sys.stdout)
    sys.exit(Exit.OK if report.ok else Exit.CONFIG)


def _interrupt_on_sigterm() -> None:
    """SIGTERM/SIGHUP to the CLI behave like Ctrl+C: stop what this run started, then exit."""
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


@contextlib.contextmanager
def _first_interrupt_ends_drains(progress: render.LineProgress):
    """During a stop, the first Ctrl+C ends the drains (the stop goes on as usual); the second
    interrupts as always."""
    def interrupted(signum, frame):
        signal.signal(signal.SIGINT, previous)
        progress.event("*", "Ctrl+C: no more waiting for answers in flight; stopping now")
        drain.skip_remaining()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_locked(operation, as_json: bool, progress: render.LineProgress | None = None):
    """Run a start/stop; its failures to even begin become one clear line and an exit code.
    `progress` is flushed first so the last line an operator reads is the verdict."""
    try:
        return operation()
    except lock.LockBusy as exc:
        message, code = (f"{exc}. Wait for it to finish; if no kitty-ops is running, see "
                         f"{Runbook.LOCK_HELD.path}"), Exit.BUSY
    except compose.ComposeError as exc:
        message, code = f"{exc.problem.message}; see {exc.problem.runbook.path}", Exit.FAILED
    except KeyboardInterrupt:
        message, code = "interrupted: what this run started was stopped again", Exit.INTERRUPTED
    finally:
        if progress is not None:
            progress.close()
    _fail(code, message, as_json)


def _fail(code: Exit, message: str, as_json: bool) -> None:
    if as_json:
        formats.to_json("error", {"ok": False, "exit_code": int(code), "message": message}, sys.stdout)
    click.echo(f"kitty-ops: {message}", err=True)
    sys.exit(code)


skip_option = click.option(
    "--skip", "skip", multiple=True, metavar="NAME[,NAME]",
    help="Leave these components out (repeat or comma-separate).")
components_help = ("NAME is a llama server (q4), a native service (images-api), a compose service "
                   "(postgres) or a whole tier (llama, native, compose).")


@cli.command("start", epilog=components_help)
@env_file_option
@click.option("--only", "only", multiple=True, metavar="NAME[,NAME]",
              help="Only these components and what they need (repeat or comma-separate).")
@skip_option
@json_option
@click.option("--no-compose", is_flag=True, help="Leave the container tier alone (native processes only).")
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="Seconds to wait for the llama servers (default LLAMACPP_HEALTH_TIMEOUT, 300).")
@click.option("--preflight", is_flag=True, help="Only run the preflight checks (`kitty-ops doctor`); start nothing.")
def start_cmd(env_file: Path | None, only: tuple[str, ...], skip: tuple[str, ...], as_json: bool,
              no_compose: bool, timeout: float | None, preflight: bool) -> None:
    """Start the whole stack as one dependency graph and wait until every part is healthy."""
    if preflight:
        _doctor(env_file, as_json)
    settings, problems = config.load_settings(env_file)
    if no_compose:
        settings = _replace(settings, compose=dataclasses.replace(settings.compose, enabled=False))
    if timeout is not None:
        settings = _replace(settings, health_timeout=timeout)
    selection = stack.Selection(_names(only), _names(skip))
    _interrupt_on_sigterm()
    progress = render.progress_for(sys.stderr)
    try:
        result = _run_locked(lambda: stack.start(settings, problems, selection, progress), as_json, progress)
    except stack.UnknownNames as exc:
        raise click.UsageError(f"{exc} (known: {', '.join(exc.known)})")
    if as_json:
        render.result_json(result, sys.stdout)
    elif result.exit in (Exit.CONFIG, Exit.UNAVAILABLE) and not result.outcomes:
        click.echo(render.problems_text(result.problems), err=True)
        click.echo("\nnothing started: fix the errors above (each names its runbook; "
                   "`kitty-ops validate` rechecks the llama servers)", err=True)
    else:
        render.result_text(result, sys.stdout, sys.stderr)
    sys.exit(result.exit)


@cli.command("stop", epilog=components_help)
@env_file_option
@click.option("--only", "only", multiple=True, metavar="NAME[,NAME]",
              help="Only these components (repeat or comma-separate).")
@skip_option
@json_option
@click.option("--no-compose", is_flag=True, help="Leave the container tier alone (native processes only).")
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="Seconds between SIGTERM and SIGKILL (default KITTY_STOP_GRACE, 10).")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds each llama server may take to finish the answers it is writing before "
                   "SIGTERM (default LLAMACPP_<NAME>_DRAIN_TIMEOUT, KITTY_DRAIN_TIMEOUT, 60).")
@click.option("--no-drain", is_flag=True, help="Do not wait for answers in flight (they are cut).")
def stop_cmd(env_file: Path | None, only: tuple[str, ...], skip: tuple[str, ...], as_json: bool,
             no_compose: bool, grace: float | None, drain_timeout: float | None, no_drain: bool) -> None:
    """Stop the stack in reverse dependency order (only processes and containers kitty-ops owns).
    Each llama server first finishes the answers it is writing (Ctrl+C ends that wait)."""
    settings, _ = config.load_settings(env_file)  # stopping must work even with a broken config
    if grace is not None:
        settings = _replace(settings, stop_grace=grace)
    if drain_timeout is not None:
        settings = _replace(settings, drain_timeout=drain_timeout, servers=tuple(
            _replace(spec, drain_timeout=drain_timeout) for spec in settings.servers))
    if no_drain:
        settings = _replace(settings, drain=False)
    selection = stack.Selection(_names(only), _names(skip))
    progress = render.progress_for(sys.stderr)
    try:
        with _first_interrupt_ends_drains(progress):
            result = _run_locked(lambda: stack.stop(settings, selection, progress,
                                                    compose_enabled=False if no_compose else None),
                                 as_json, progress)
    except stack.UnknownNames as exc:
        raise click.UsageError(f"{exc} (known: {', '.join(exc.known)})")
    (render.result_json(result, sys.stdout) if as_json else render.result_text(result, sys.stdout, sys.stderr))
    sys.exit(result.exit)


@cli.command("supervise", epilog=components_help)
@env_file_option
@click.option("--only", "only", multiple=True, metavar="NAME[,NAME]",
              help="Start and supervise only these components and what they need.")
@skip_option
@click.option("--no-compose", is_flag=True, help="Leave the container tier alone (native processes only).")
@click.option("--stop-on-exit/--keep-on-exit", default=False, show_default=True,
              help="On SIGTERM/SIGINT also stop the stack (the service's setting), or leave it running.")
@click.option("--no-start", is_flag=True,
              help="Do not start the stack first: keep up what the operator's intent says is up.")
def supervise_cmd(env_file: Path | None, only: tuple[str, ...], skip: tuple[str, ...], no_compose: bool,
                  stop_on_exit: bool, no_start: bool) -> None:
    """Start the stack like `start`, then keep it up until SIGTERM/SIGINT: restart what crashed or
    hung, alone, with backoff; give up on a crash loop; never bring back what the operator stopped."""
    from kitty_ops.supervise import run as supervise  # noqa: PLC0415
    settings, problems = config.load_settings(env_file)
    if no_compose:
        settings = _replace(settings, compose=dataclasses.replace(settings.compose, enabled=False))
    selection = stack.Selection(_names(only), _names(skip))
    progress = render.LineProgress(sys.stderr)  # timestamped lines: this runs for months, into a log
    try:
        ended = supervise.supervise(settings, problems, selection, progress, stop_on_exit, not no_start,
                                    on_started=lambda result: render.result_text(result, sys.stdout, sys.stderr))
    except stack.UnknownNames as exc:
        progress.close()
        raise click.UsageError(f"{exc} (known: {', '.join(exc.known)})")
    progress.close()
    if ended.start is not None and ended.exit != Exit.OK and ended.start.exit != Exit.OK:
        render.result_text(ended.start, sys.stdout, sys.stderr)
    if ended.stop is not None:
        render.result_text(ended.stop, sys.stdout, sys.stderr)
    click.echo(f"kitty-ops supervise: {ended.message}", err=True)
    sys.exit(ended.exit)


@cli.command("restart", epilog=components_help)
@env_file_option
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@json_option
def restart_cmd(env_file: Path | None, names: tuple[str, ...], as_json: bool) -> None:
    """Stop and start these components (drained, like stop then start), clearing a supervisor's
    `failed` state: the way to retry a crash loop once its cause is fixed."""
    settings, problems = config.load_settings(env_file)
    selection = stack.Selection(_names(names))
    _interrupt_on_sigterm()
    progress = render.progress_for(sys.stderr)

    def restart():
        with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "restart"):
            stopped = stack.stop(settings, selection, progress)
            if stopped.exit != Exit.OK:
                return stopped
            return stack.start(settings, problems, selection, progress)

    try:
        result = _run_locked(restart, as_json, progress)
    except stack.UnknownNames as exc:
        raise click.UsageError(f"{exc} (known: {', '.join(exc.known)})")
    (render.result_json(result, sys.stdout) if as_json else render.result_text(result, sys.stdout, sys.stderr))
    sys.exit(result.exit)


@cli.group("service")
def service_group() -> None:
    """Run `kitty-ops supervise --stop-on-exit` as a launchd job (macOS) or a systemd unit
    (Linux): the stack comes up at boot or login and stays up."""


service_scope = click.option("--system", is_flag=True,
                             help="A system unit / LaunchDaemon (needs root) instead of the user's.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the file and the commands; change nothing.")


def _service_context(env_file: Path | None, system: bool):
    import getpass  # noqa: PLC0415
    import os  # noqa: PLC0415
    import platform  # noqa: PLC0415
    from kitty_ops.supervise import service  # noqa: PLC0415
    settings, _ = config.load_settings(env_file)
    if not settings.env_file_found:
        _fail(Exit.CONFIG, f"env file not found: {settings.env_file}; the service needs one "
                           f"(see {Runbook.SERVICE.path})", False)
    macos = platform.system() == "Darwin"
    binary = Path(sys.argv[0]).absolute() if Path(sys.argv[0]).name == "kitty-ops" else \
        Path(sys.executable).parent / "kitty-ops"
    if not binary.exists():
        _fail(Exit.CONFIG, f"cannot find the kitty-ops script next to {sys.executable}; install kitty-ops "
                           f"into a virtual environment (make setup) (see {Runbook.SERVICE.path})", False)
    user = getpass.getuser() if system else ""
    spec = service.spec_for(settings, binary, system, user, macos)
    return service, settings, spec, macos, Path.home(), os.getuid()


@service_group.command("install")
@env_file_option
@service_scope
@dry_run_option
def service_install_cmd(env_file: Path | None, system: bool, dry_run: bool) -> None:
    """Write the unit or plist and start it (idempotent: installing twice changes nothing)."""
    service, settings, spec, macos, home, uid = _service_context(env_file, system)
    path = service.file_path(spec, macos, home)
    if dry_run:
        click.echo(f"# {path}")
        click.echo(service.content(spec, macos).decode(), nl=False)
        current = path.read_bytes() if path.exists() else None
        for argv in service.install_plan(spec, macos, home, uid, current, False):
            click.echo("# then: " + " ".join(argv))
        return
    done = service.install(spec, macos, home, uid)
    _service_done(done, "install")


@service_group.command("uninstall")
@env_file_option
@service_scope
@dry_run_option
def service_uninstall_cmd(env_file: Path | None, system: bool, dry_run: bool) -> None:
    """Stop the supervisor (and with it the stack: --stop-on-exit) and remove the unit or plist."""
    service, settings, spec, macos, home, uid = _service_context(env_file, system)
    path = service.file_path(spec, macos, home)
    if dry_run:
        for argv in service.uninstall_plan(spec, macos, uid, path.exists(), True):
            click.echo(" ".join(argv))
        click.echo(f"rm {path}")
        return
    _service_done(service.uninstall(spec, macos, home, uid), "uninstall")


@service_group.command("status")
@env_file_option
@service_scope
@json_option
def service_status_cmd(env_file: Path | None, system: bool, as_json: bool) -> None:
    """The service manager's view (loaded, state, pid, last exit) beside the supervisor's own."""
    from kitty_ops.host import supervision  # noqa: PLC0415
    service, settings, spec, macos, home, uid = _service_context(env_file, system)
    manager = service.manager_status(spec, macos, uid)
    live = supervision.live(settings.logs_dir)
    components = {k: {"state": v.state, "restarts": v.restarts,
                      "last_exit": v.last_exit.what if v.last_exit else None}
                  for k, v in (live.components.items() if live else [])}
    path = service.file_path(spec, macos, home)
    if as_json:
        formats.to_json("service", {"file": str(path), "installed": path.exists(),
                                    "name": spec.label if macos else spec.unit, "manager": manager,
                                    "supervisor": {"pid": live.pid if live else None, "components": components}},
                        sys.stdout)
        return
    click.echo(f"{'launchd job' if macos else 'systemd unit'}: {spec.label if macos else spec.unit}")
    click.echo(f"file: {path} ({'present' if path.exists() else 'absent'})")
    click.echo("manager: " + ", ".join(f"{k} {v}" for k, v in manager.items() if v))
    if live is None:
        click.echo("supervisor: not running")
    else:
        click.echo(f"supervisor: pid {live.pid}")
        for name, c in components.items():
            last = f", last exit: {c['last_exit']}" if c["last_exit"] else ""
            click.echo(f"  {name}: {c['state']}, restarts {c['restarts']}{last}")


def _service_done(done, verb: str) -> None:
    for argv, code, last in done.steps:
        click.echo(f"{' '.join(argv)}: {'ok' if code == 0 else f'exit {code}'}" + (f" ({last})" if code and last else ""))
    if not done.ok:
        _fail(Exit.FAILED, f"service {verb}: {done.message} ({done.path}); see {Runbook.SERVICE.path}", False)
    click.echo(f"{done.path}: {done.message}")


@cli.command("status")
@env_file_option
@json_option
def status_cmd(env_file: Path | None, as_json: bool) -> None:
    """Show every component of the stack (llama servers, native services, containers), the
    disabled ones included: state, health, pid or container, ports, uptime, memory, model or
    image, engine version, restarts. It only reads: nothing is started, signalled or removed.
    Exit 0 whenever the status could be read (`health` judges it)."""
    # only this command needs them
    from kitty_ops.health import render as health_render, run as health_run, status as health_status  # noqa: PLC0415
    from kitty_ops.host import desired  # noqa: PLC0415

    settings, _ = config.load_settings(env_file)
    if env_file is not None and not settings.env_file_found:
        _fail(Exit.CONFIG, f"env file not found: {settings.env_file}; see {Runbook.CONFIGURATION.path}", as_json)
    report = health_run.run(settings, health_status.PROBE_TIMEOUT, health_status.DEADLINE, memory=True)
    view = health_status.build(report, settings, desired.load(settings.logs_dir))
    (health_render.status_json if as_json else health_render.status_text)(view, sys.stdout)


class MonitoringCommand(click.Command):
    """A command read by monitoring systems: bad arguments are UNKNOWN (3) with a status line on
    stdout, not click's usage exit 2, which a monitoring system would read as CRITICAL."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            click.echo(f"KITTY UNKNOWN - bad arguments: {exc.format_message()}")
            exc.exit_code = Health.UNKNOWN
            raise


def _health_table() -> str:
    return "\n".join(f"  {int(code):>3}  {code.name:<8} {text}" for code, text in HEALTH_DESCRIPTIONS.items())


@cli.command("health", cls=MonitoringCommand,
             epilog=f"Exit codes (monitoring-plugin convention):\n\n\b\n{_health_table()}")
@env_file_option
@json_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when all is OK (cron mails only problems).")
@click.option("--prometheus", "prometheus_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write this node_exporter textfile-collector file (*.prom), atomically.")
@click.option("--timeout", type=click.FloatRange(min=0.05, max=60), default=None,
              help="Seconds each probe may take, connect and read (default KITTY_HEALTH_PROBE_TIMEOUT, 2).")
@click.option("--deadline", type=click.FloatRange(min=0.1, max=600), default=None,
              help="Seconds the whole check may take; past it, UNKNOWN (default KITTY_HEALTH_DEADLINE, 10).")
def health_cmd(env_file: Path | None, as_json: bool, quiet: bool, prometheus_file: Path | None,
               timeout: float | None, deadline: float | None) -> None:
    """Check every component at once: llama servers, native services, containers (for cron and
    monitoring). The first line is a monitoring-plugin status line with performance data."""
    # only this command needs them
    from kitty_ops.health import judge, render as health_render, run as health_run  # noqa: PLC0415

    try:
        settings, problems = config.load_settings(env_file)
        own = [p for p in problems if p.is_error and p.subject.startswith("KITTY_HEALTH_")]
        if own:  # the check's own settings are wrong: bad arguments, in effect
            click.echo(f"KITTY UNKNOWN - {own[0].subject}: {own[0].message}; {own[0].fix} "
                       f"(see {own[0].runbook.path})")
            sys.exit(Health.UNKNOWN)
        if env_file is not None and not settings.env_file_found:
            click.echo(f"KITTY UNKNOWN - env file not found: {settings.env_file} "
                       f"(see {Runbook.CONFIGURATION.path})")
            sys.exit(Health.UNKNOWN)
        probe_timeout = timeout or settings.probe_timeout
        # The default deadline leaves every probe its full timeout; an explicit one is obeyed.
        overall = deadline or max(settings.health_deadline, probe_timeout + 2)
        write_failed: list[str] = []

        def write_metrics(report: health_run.Report) -> None:
            if prometheus_file is None:
                return
            try:
                health_render.write_prometheus(prometheus_file, report)
            except OSError as exc:
                write_failed.append(f"cannot write {prometheus_file}: {exc.strerror or exc}; "
                                    f"see {Runbook.HEALTH_CHECK.path}")

        report = health_run.check(settings, probe_timeout, overall, after=write_metrics)
        if write_failed:
            report.notes += write_failed
            report.level = judge.worst([report.level, Health.UNKNOWN])
    except Exception as exc:  # the check's own failure is UNKNOWN, never a traceback and exit 1
        click.echo(f"KITTY UNKNOWN - the health check failed: {exc.__class__.__name__}: {exc}; "
                   f"see {Runbook.HEALTH_CHECK.path}")
        sys.exit(Health.UNKNOWN)
    if not (quiet and report.level is Health.OK):
        (health_render.json_report if as_json else health_render.text)(report, sys.stdout)
    sys.exit(report.level)


def _backup_settings(env_file: Path | None, as_json: bool) -> config.Settings:
    settings, problems = config.load_settings(env_file)
    own = [p for p in problems if p.is_error and p.subject.startswith(("KITTY_BACKUP_", "OBJECT_STORE_PORT", "MINIO_PORT"))]
    if env_file is not None and not settings.env_file_found:
        _fail(Exit.CONFIG, f"env file not found: {settings.env_file}; see {Runbook.CONFIGURATION.path}", as_json)
    if own:
        _fail(Exit.CONFIG, f"{own[0].subject}: {own[0].message}; {own[0].fix}; see {own[0].runbook.path}", as_json)
    return settings


def _backup_exit(outcome, as_json: bool) -> None:
    (render.backup_json(outcome, sys.stdout) if as_json else render.backup_text(outcome, sys.stdout, sys.stderr))
    sys.exit(Exit.OK if outcome.ok else Exit.FAILED)


@cli.command("backup")
@env_file_option
@click.option("--keep", type=click.IntRange(min=0), default=None,
              help="Then keep only the newest N complete backups (default KITTY_BACKUP_KEEP; 0 keeps all).")
@click.option("--label", default="", metavar="WORD", help="Appended to the backup's name (a-z, 0-9, '-').")
@json_option
def backup_cmd(env_file: Path | None, keep: int | None, label: str, as_json: bool) -> None:
    """Back up postgres, redis, the S3 objects and .env into one verified directory."""
    from kitty_ops.backup import run as backup  # noqa: PLC0415 (only these commands need it)
    if label and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", label):
        raise click.UsageError(f"--label {label!r}: use a-z, 0-9 and '-'")
    settings = _backup_settings(env_file, as_json)
    _interrupt_on_sigterm()
    progress = render.progress_for(sys.stderr)
    _backup_exit(_run_locked(lambda: backup.backup(settings, label, keep, progress), as_json, progress), as_json)


@cli.command("verify-backup")
@env_file_option
@click.argument("backup_name", metavar="[NAME|PATH]", required=False)
@json_option
def verify_backup_cmd(env_file: Path | None, backup_name: str | None, as_json: bool) -> None:
    """Re-hash every file of a backup (default: the newest) and read each artifact with its tool."""
    from kitty_ops.backup import run as backup  # noqa: PLC0415
    _backup_exit(backup.verify(_backup_settings(env_file, as_json), backup_name), as_json)


@cli.command("list-backups")
@env_file_option
@json_option
def list_backups_cmd(env_file: Path | None, as_json: bool) -> None:
    """The backups under KITTY_BACKUP_DIR, oldest first, and leftovers of interrupted ones."""
    from kitty_ops.backup import run as backup  # noqa: PLC0415
    found = backup.backups(_backup_settings(env_file, as_json))
    (render.backups_json if as_json else render.backups_text)(found, sys.stdout)


@cli.command("restore")
@env_file_option
@click.argument("backup_name", metavar="[NAME|PATH]", required=False)
@click.option("--yes", is_flag=True, help="Do not ask (required when there is no terminal).")
@json_option
def restore_cmd(env_file: Path | None, backup_name: str | None, yes: bool, as_json: bool) -> None:
    """Restore a backup (default: the newest) over the current state, after verifying it and
    taking a safety backup of what is there now."""
    from kitty_ops.backup import run as backup  # noqa: PLC0415
    settings = _backup_settings(env_file, as_json)
    if not yes:
        if not sys.stdin.isatty():
            _fail(Exit.USAGE, "refusing to restore without --yes: there is no terminal to confirm on", as_json)
        try:
            shown = backup.resolve(settings, backup_name)
        except backup.BadBackup as exc:
            _fail(Exit.FAILED, f"{exc}; see {Runbook.BACKUP.path}", as_json)
        if not click.confirm(f"Restore {shown} over the current state? A safety backup is taken first"):
            _fail(Exit.USAGE, "not confirmed; nothing was changed", as_json)
    _interrupt_on_sigterm()
    progress = render.progress_for(sys.stderr)
    _backup_exit(_run_locked(lambda: backup.restore(settings, backup_name, progress), as_json, progress), as_json)


@cli.command("doctor")
@env_file_option
@json_option
def doctor_cmd(env_file: Path | None, as_json: bool) -> None:
    """Is this machine ready? Python, Docker and compose v2, the engine, the models, the
    accelerator, disk, ports, .env permissions and the start order; exit 1 if a required check fails."""
    _doctor(env_file, as_json)


def _doctor(env_file: Path | None, as_json: bool) -> None:
    from kitty_ops.rescue import doctor  # noqa: PLC0415
    settings, problems = config.load_settings(env_file)
    checks = doctor.run(settings, problems)
    (render.doctor_json if as_json else render.doctor_text)(checks, sys.stdout)
    sys.exit(Exit.FAILED if doctor.failed(checks) else Exit.OK)


@cli.command("emergency-stop")
@env_file_option
@click.option("--deadline", type=click.FloatRange(min=1, max=300), default=15.0, show_default=True,
              help="Seconds for the whole stop, ports checked included.")
@json_option
def emergency_stop_cmd(env_file: Path | None, deadline: float, as_json: bool) -> None:
    """Kill everything the stack owns now: SIGKILL to its recorded process groups (proven ours
    only), docker kill + rm -f of its compose project's containers; then check its ports."""
    from kitty_ops.rescue import emergency  # noqa: PLC0415
    settings, _ = config.load_settings(env_file)  # an emergency stop never refuses over configuration
    report = emergency.run(settings, deadline)
    (render.emergency_json(report, sys.stdout) if as_json else render.emergency_text(report, sys.stdout, sys.stderr))
    sys.exit(Exit.OK if report.ok else Exit.FAILED)


@cli.command("logs")
@env_file_option
@click.argument("name")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(min=0))
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl+C.")
def logs_cmd(env_file: Path | None, name: str, lines: int, follow: bool) -> None:
    """Print the log of server NAME."""
    settings, _ = config.load_settings(env_file)
    known = {s.name for s in settings.servers} | set(records.recorded_names(settings.logs_dir))
    if name not in known:
        raise click.UsageError(f"unknown server {name!r} (known: {', '.join(sorted(known)) or 'none'})")
    path = records.log_path(settings.logs_dir, name)
    if not path.exists() and not follow:
        _fail(Exit.FAILED, f"no log yet at {path}: server {name!r} has not been started", False)
    for line in records.tail(path, lines):
        click.echo(line)
    if follow:
        _follow(path)


def _follow(path: Path) -> None:
    position = path.stat().st_size if path.exists() else 0
    try:
        while True:
            size = path.stat().st_size if path.exists() else 0
            if size < position:  # truncated or replaced: start again from the top
                position = 0
            if size > position:
                with path.open("rb") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                position += len(chunk)
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def _running_url(settings: config.Settings, spec: config.ServerSpec) -> str:
    """Where the server listens: its record's URL (start may have bound it to the Docker bridge
    gateway so that containers reach it), else the configured one."""
    try:
        record = records.load(settings.logs_dir, spec.name)
    except records.BadRecord:
        record = None
    return record.url if record else spec.url


def _ask(env_file: Path | None, server: str, path: str, body: dict, pick, timeout: float) -> str:
    """POST `body` to a server's `path` and return what `pick` takes from its JSON answer; a
    server that gives none fails the command with its HTTP status and the runbook."""
    settings, _ = config.load_settings(env_file)
    spec = settings.server(server)
    if spec is None:
        known = ", ".join(s.name for s in settings.servers) or "none"
        raise click.UsageError(f"unknown server {server!r} (configured: {known})")
    if path.startswith("/v1/chat") and not _has_chat_template(spec):
        click.echo(f"kitty-ops: {server}'s model has no chat template (a base model): llama-server falls back "
                   f"to ChatML and the answer may ramble; `kitty-ops complete` suits it", err=True)
    url = _running_url(settings, spec)
    try:
        code, data = probes.http_request(url + path, "POST", json.dumps({"model": spec.alias, **body}).encode(),
                                         timeout, {"Content-Type": "application/json", **spec.auth})
        answer = pick(json.loads(data)) if code == 200 else None
    except (OSError, ValueError, KeyError, IndexError) as exc:
        code, answer = None, None
        data = str(exc).encode()
    if answer is None:
        _fail(Exit.FAILED, f"{server} at {url} gave no answer (HTTP {code}: "
                           f"{data[:200].decode(errors='replace')}); check `kitty-ops status`, "
                           f"see {Runbook.SERVER_CRASH.path}", False)
    return answer


def _has_chat_template(spec: config.ServerSpec) -> bool:
    """The model file's own chat template (GGUF `tokenizer.chat_template`); a file that cannot be
    read counts as having one: this is advice, not a check."""
    try:
        return bool(gguf.read_metadata(spec.model, lambda key: key == "tokenizer.chat_template"))
    except gguf.ModelFileError:
        return True


server_option = click.option("--server", default="q4", show_default=True, help="Server to ask.")
timeout_option = click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(min=1))


@cli.command("chat")
@env_file_option
@server_option
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@timeout_option
@click.argument("prompt")
def chat_cmd(env_file: Path | None, server: str, max_tokens: int, timeout: float, prompt: str) -> None:
    """Send PROMPT to a server's /v1/chat/completions and print the answer (for models with a chat
    template; `complete` continues a text)."""
    click.echo(_ask(env_file, server, "/v1/chat/completions",
                    {"max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]},
                    lambda answer: answer["choices"][0]["message"]["content"], timeout))


@cli.command("complete")
@env_file_option
@server_option
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(min=1))
@timeout_option
@click.argument("prompt")
def complete_cmd(env_file: Path | None, server: str, max_tokens: int, timeout: float, prompt: str) -> None:
    """Continue PROMPT with a server's /completion (what a base model does well) and print the
    prompt with its continuation, to the end of the sentence."""
    text = _ask(env_file, server, "/completion",
                {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "stop": ["\n", "."]},
                lambda answer: answer["content"] + (answer.get("stopping_word") or "").strip(), timeout)
    click.echo(prompt + text)


def _concurrency_levels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give whole numbers, comma-separated (1,2,4)")
    if not levels or any(level < 1 for level in levels):
        raise click.BadParameter(f"{value!r}: give one or more levels of 1 or more (1,2,4)")
    return levels


@cli.command("bench")
@env_file_option
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--concurrency", default="1,2,4", show_default=True, metavar="N[,N...]", callback=_concurrency_levels,
              help="Concurrent streams per level; a level above the server's slots is capped there.")
@click.option("--requests", type=click.IntRange(1, 100_000), default=8, show_default=True,
              help="Requests per concurrency level.")
@click.option("--prompt-tokens", type=click.IntRange(1, 10_000_000), default=128, show_default=True,
              help="About this many prompt tokens per request (seeded words, scaled by the server's tokenizer).")
@click.option("--max-tokens", type=click.IntRange(2, 10_000_000), default=64, show_default=True,
              help="Tokens generated per request, exactly (end-of-sequence ignored).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the prompt set and of sampling.")
@click.option("--deadline", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds for the whole bench, the yardstick included.")
@click.option("--threshold", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Percent worse (generation tokens/s, time to first token) that is a regression: exit 1.")
@click.option("--no-compare", is_flag=True, help="Do not compare with the last comparable run.")
@click.option("--yardstick", is_flag=True,
              help="Also run llama.cpp's llama-bench on the same model and threads, and give the ratio.")
@json_option
def bench_cmd(env_file: Path | None, names: tuple[str, ...], concurrency: tuple[int, ...], requests: int,
              prompt_tokens: int, max_tokens: int, seed: int, deadline: float, threshold: float, no_compare: bool,
              yardstick: bool, as_json: bool) -> None:
    """Measure the running llama servers (NAME..., default: every enabled one that runs) through
    their HTTP API: time to first token, tokens/s per request and in all, latency, memory; save
    the run under .logs/bench/ and compare it with the last comparable one (a regression beyond
    --threshold exits 1)."""
    from kitty_ops.bench import render as bench_render, run as bench_run  # noqa: PLC0415
    settings, _ = config.load_settings(env_file)
    if env_file is not None and not settings.env_file_found:
        _fail(Exit.CONFIG, f"env file not found: {settings.env_file}; see {Runbook.CONFIGURATION.path}", as_json)
    options = bench_run.Options(concurrency, requests, prompt_tokens, max_tokens, seed, deadline, not no_compare,
                                threshold, yardstick)
    _interrupt_on_sigterm()
    progress = render.progress_for(sys.stderr)
    try:
        report = bench_run.bench(settings, _names(names), options, progress)
    except bench_run.BenchError as exc:
        progress.close()
        if exc.code == Exit.USAGE and not as_json:
            raise click.UsageError(str(exc))
        runbook = f"; see {exc.runbook.path}" if exc.runbook and exc.runbook.path not in str(exc) else ""
        _fail(exc.code, f"{exc}{runbook}", as_json)
    except KeyboardInterrupt:
        progress.close()
        _fail(Exit.INTERRUPTED, "interrupted: the bench stopped and saved nothing of the role it was measuring", as_json)
    progress.close()
    (bench_render.json_report(report, sys.stdout) if as_json else bench_render.text(report, sys.stdout, sys.stderr))
    sys.exit(report.exit)


def _replace(settings: config.Settings, **changes) -> config.Settings:
    return dataclasses.replace(settings, **changes)


def main() -> None:
    cli(prog_name="kitty-ops")
