"""`kitty-ops validate`: every check that can be made before starting anything, all at once.

`start` runs the same checks, so what validate accepts is what start will try.
"""

from __future__ import annotations

import dataclasses

import psutil

from kitty_ops.config import ServerSpec, Settings
from kitty_ops.host import ports, procs, records
from kitty_ops.host.platform import Host
from kitty_ops.llama import command, gguf, memory
from kitty_ops.problems import Problem, error, warning
from kitty_ops.runbooks import Runbook


@dataclasses.dataclass
class Report:
    settings: Settings
    problems: list[Problem]
    engine: command.EngineInfo | None
    model_bytes: dict[str, int]  # per enabled server: model shards plus mmproj
    running: set[str]  # servers already running and proven ours (their ports are theirs)

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)


def check(settings: Settings, config_problems: list[Problem],
          specs: list[ServerSpec] | None = None) -> Report:
    specs = list(settings.enabled_servers) if specs is None else specs
    problems = list(config_problems)
    model_bytes: dict[str, int] = {}
    for spec in specs:
        model_bytes[spec.name] = _check_models(spec, problems)
        _check_api_key(spec, problems)
        for flag in command.managed_flags_in_extras(spec):
            problems.append(error(
                f"{spec.var_prefix}EXTRA_ARGS", f"sets {flag}, which kitty-ops manages itself",
                f"remove {flag} from EXTRA_ARGS and use the {spec.var_prefix}* variable for it",
                Runbook.CONFIGURATION))

    engine = _check_engine(settings, specs, problems)
    running = _running_servers(settings, specs)
    _check_ports(specs, running, problems)
    _check_memory(specs, model_bytes, problems, Host.current())
    return Report(settings, problems, engine, model_bytes, running)


def _check_api_key(spec: ServerSpec, problems: list[Problem]) -> None:
    """The key travels in the environment (LLAMA_API_KEY), never argv, which every user reads
    with ps; a server the operator opened beyond loopback without one answers anyone who reaches
    it. (The bridge gateway kitty-ops picks for container callers on Linux is not warned about:
    it is the narrowest address they reach.)"""
    extras = command.flags_in(["x", *command.normalize_args(spec.extra_args)])
    for flag in ("--api-key", "--api-key-file"):
        if flag in extras:
            problems.append(error(
                f"{spec.var_prefix}EXTRA_ARGS", f"passes {flag}: the key would stand in the process list",
                f"remove {flag} and set {spec.var_prefix}API_KEY (or LLAMACPP_API_KEY); kitty-ops passes it "
                "as LLAMA_API_KEY and sends it with its own requests", Runbook.CONFIGURATION))
    if not spec.api_key and spec.bind_explicit and spec.bind not in ("127.0.0.1", "localhost", "::1"):
        problems.append(warning(
            f"{spec.var_prefix}BIND", f"server {spec.name!r} listens on {spec.bind} without an API key: "
            "anyone who reaches that address can use it",
            f"set {spec.var_prefix}API_KEY (or LLAMACPP_API_KEY), or bind it to 127.0.0.1", Runbook.CONFIGURATION))


def _check_models(spec: ServerSpec, problems: list[Problem]) -> int:
    total = 0
    if str(spec.model) not in ("", "."):
        try:
            total += gguf.inspect(spec.model).size_bytes
        except gguf.ModelFileError as exc:
            problems.append(error(f"{spec.var_prefix}MODEL", str(exc), exc.fix, Runbook.MODEL_FILES))
    if spec.name == "vision" and spec.mmproj is None:
        problems.append(error(
            f"{spec.var_prefix}MMPROJ", "the vision server is enabled without a multimodal "
            "projector", f"set {spec.var_prefix}MMPROJ to the model's mmproj .gguf, or "
            f"{spec.var_prefix}ENABLED=false", Runbook.VISION_MMPROJ))
    elif spec.mmproj is not None:
        try:
            total += gguf.inspect(spec.mmproj).size_bytes
        except gguf.ModelFileError as exc:
            problems.append(error(f"{spec.var_prefix}MMPROJ", str(exc), exc.fix, Runbook.VISION_MMPROJ))
    return total


def _check_engine(settings: Settings, specs: list[ServerSpec],
                  problems: list[Problem]) -> command.EngineInfo | None:
    binary = command.resolve_binary(settings.server_bin)
    if binary is None:
        problems.append(error(
            "LLAMACPP_SERVER_BIN", f"llama-server binary {settings.server_bin!r} not found or not "
            "executable", "install llama.cpp (`make setup` on Linux, `brew install llama.cpp` on "
            "macOS) or set LLAMACPP_SERVER_BIN to its full path", Runbook.ENGINE_BINARY))
        return None
    engine = command.EngineInfo.probe(binary, cache_dir=settings.logs_dir / "cache")
    if not engine.flags:
        problems.append(warning(
            "LLAMACPP_SERVER_BIN", f"could not read the flags of {binary} from its --help; "
            "generated flags were not checked", "run the binary with --help by hand to see why",
            Runbook.ENGINE_BINARY))
        return engine
    for spec in specs:
        extras = set(command.flags_in(["x", *command.normalize_args(spec.extra_args)]))
        for flag in engine.unknown_flags(command.build_argv(spec, binary)):
            subject = f"{spec.var_prefix}EXTRA_ARGS" if flag in extras else "LLAMACPP_SERVER_BIN"
            problems.append(error(
                subject, f"llama-server {engine.version} does not accept {flag} (server {spec.name!r})",
                "update llama.cpp, or remove the flag from EXTRA_ARGS", Runbook.ENGINE_BINARY))
    return engine


def _running_servers(settings: Settings, specs: list[ServerSpec]) -> set[str]:
    running = set()
    for spec in specs:
        try:
            record = records.load(settings.logs_dir, spec.name)
        except records.BadRecord:
            continue
        if record and procs.check(record.identity) is procs.Liveness.OURS:
            running.add(spec.name)
    return running


def _check_ports(specs: list[ServerSpec], running: set[str], problems: list[Problem]) -> None:
    for spec in specs:
        if spec.name in running or spec.port == 0 or ports.is_free(spec.bind, spec.port):
            continue
        holders = ports.holders(spec.port) or [ports.Holder(None, "an unidentified process")]
        who = ", ".join(h.describe() for h in holders)
        problems.append(error(
            f"{spec.var_prefix}PORT", f"port {spec.port} for server {spec.name!r} is in use by {who}",
            f"stop that process, or set {spec.var_prefix}PORT to a free port", Runbook.PORT_CONFLICT))


def _check_memory(specs: list[ServerSpec], model_bytes: dict[str, int], problems: list[Problem],
                  host: Host) -> None:
    """Model files plus KV caches against physical memory, and on Apple Silicon what is offloaded
    against Metal's working set (memory.budget). A model already reported bad is not read again."""
    reported = {p.subject for p in problems}
    needs = []
    for spec in specs:
        shape = None
        if str(spec.model) not in ("", ".") and f"{spec.var_prefix}MODEL" not in reported:
            try:
                shape = gguf.read_shape(spec.model)
            except gguf.ModelFileError as exc:
                problems.append(warning(f"{spec.var_prefix}MODEL", str(exc), exc.fix,
                                        Runbook.MODEL_FILES))
        needs.append(memory.need(spec, model_bytes.get(spec.name, 0), shape))
    problems.extend(memory.budget(needs, psutil.virtual_memory().total, host.gpu_working_set()))

