"""`kitty-ops bench`: measure the running llama servers, save the run, compare it with the last
comparable one.

A server is benched only when it runs, is provably the process kitty-ops started (its identity
record: start time and arguments, as every command that touches a server checks) and answers
/health; anything else is an error naming the server and the next step, before any request is
sent. Roles are benched one after the other, never at once (each would slow the other down).

Per role: `/props` says how many slots the server has (else the `--parallel` it was started
with), and a concurrency level above it is capped there (said so: more streams than slots only
queue). One warm-up request, then each level: `--requests` streamed completions,
`--concurrency` at a time, of the same seeded prompts, while the memory sampler runs; the
server's `/metrics` counter of generated tokens is read before and after. The overall
`--deadline` bounds everything, the yardstick included; a server that exits mid-bench ends it
at once with its log's last lines.

The run is saved under .logs/bench/ (also when cut short, marked incomplete, never a baseline)
and compared with the last comparable record: a regression beyond the threshold fails the
command (exit 1) with ops/runbooks/bench-regression.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import subprocess
import time
from pathlib import Path
from typing import Callable

from kitty_ops import __version__
from kitty_ops.bench import load, prompts, record as records_, stats, yardstick
from kitty_ops.bench.memory import MemorySampler, gpu_probe
from kitty_ops.config import ServerSpec, Settings
from kitty_ops.exitcodes import Exit
from kitty_ops.host import observe, probes, procs
from kitty_ops.llama import offload
from kitty_ops.outcomes import Progress, Silent
from kitty_ops.runbooks import Runbook

WARMUP_INDEX = 1_000_000  # the warm-up's prompt is none of the measured ones
TOKENS_METRIC = "llamacpp:tokens_predicted_total"
YARDSTICK_MIN_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...] = (1, 2, 4)
    requests: int = 8  # per level
    prompt_tokens: int = 128  # about
    max_tokens: int = 64  # exactly (ignore_eos)
    seed: int = 42
    deadline: float = 600.0  # seconds, the whole bench
    compare: bool = True
    threshold: float = 10.0  # percent
    yardstick: bool = False

    def as_dict(self) -> dict:
        return {"concurrency": list(self.concurrency), "requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "max_tokens": self.max_tokens, "seed": self.seed, "deadline": self.deadline,
                "threshold": self.threshold, "yardstick": self.yardstick}


class BenchError(Exception):
    """The bench cannot run (a server not running, not ours, not ready; options that do not fit)."""

    def __init__(self, message: str, code: Exit = Exit.FAILED, runbook: Runbook | None = None):
        super().__init__(message)
        self.code = code
        self.runbook = runbook


@dataclasses.dataclass
class RoleRun:
    name: str
    record: dict
    saved: Path | None = None
    comparison: records_.Comparison | None = None
    compared: str = ""  # what the comparison was against, or why there was none
    notes: list[str] = dataclasses.field(default_factory=list)
    failure: str = ""  # why this role's run failed (died, deadline, errors, yardstick)
    model_path: str = ""

    @property
    def regressions(self) -> tuple[records_.Change, ...]:
        return self.comparison.regressions if self.comparison else ()


@dataclasses.dataclass
class Report:
    roles: list[RoleRun]
    skipped: list[str]  # enabled roles not benched, each with why
    exit: Exit = Exit.OK
    message: str = ""
    runbook: Runbook | None = None


# ------------------------------------------------------------------------------ which servers

def _not_ready(name: str, seen: observe.Observed) -> tuple[str, Runbook]:
    """Why `seen` cannot be benched, with the next step, in the operator's words."""
    start = f"start it with `kitty-ops start --only {name}`"
    if seen.bad_record:
        return f"{name}: {seen.death()}; check it with `kitty-ops status`", Runbook.STALE_PID
    if seen.record is None:
        return f"{name} is not running (kitty-ops has no record of it): {start}", Runbook.SERVER_CRASH
    if seen.liveness is procs.Liveness.FOREIGN:
        return f"{name}: {seen.death()}; `kitty-ops status` clears the record, then {start}", Runbook.STALE_PID
    if seen.liveness is not procs.Liveness.OURS:
        return f"{name} is not running: {seen.death()}; {start}", Runbook.SERVER_CRASH
    if seen.suspended:
        return f"{name} (pid {seen.record.pid}) is stopped (SIGSTOP) and answers nothing", Runbook.SERVER_CRASH
    assert seen.probe is not None
    if seen.probe.health is probes.Health.LOADING:
        return (f"{name} is still loading its model ({seen.probe.detail}): wait until `kitty-ops status` says "
                f"healthy", Runbook.SERVER_TIMEOUT)
    return f"{name} does not answer /health at {seen.record.url} ({seen.probe.detail})", Runbook.SERVER_CRASH


def select(settings: Settings, names: tuple[str, ...],
           look: Callable[[Path, str], observe.Observed] = lambda d, n: observe.observe(d, n, timeout=2.0),
           ) -> tuple[list[tuple[ServerSpec, observe.Observed]], list[str]]:
    """The servers to bench, each running, ours and healthy: the named ones (each must be), or
    every enabled one that is (the others are returned as skipped, with why)."""
    if names:
        known = {s.name for s in settings.servers}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BenchError(f"unknown server {', '.join(map(repr, unknown))} (configured: "
                             f"{', '.join(sorted(known)) or 'none'})", Exit.USAGE)
        specs = [settings.server(n) for n in dict.fromkeys(names)]
    else:
        specs = list(settings.enabled_servers)
        if not specs:
            raise BenchError("no llama server is enabled (LLAMACPP_SERVERS, LLAMACPP_<NAME>_ENABLED)", Exit.CONFIG,
                             Runbook.CONFIGURATION)
    chosen, skipped, problems = [], [], []
    for spec in specs:
        seen = look(settings.logs_dir, spec.name)
        ready = (seen.liveness is procs.Liveness.OURS and not seen.suspended and seen.probe is not None
                 and seen.probe.health is probes.Health.READY)
        if ready:
            chosen.append((spec, seen))
        else:
            message, runbook = _not_ready(spec.name, seen)
            (problems if names else skipped).append((message, runbook))
    if problems:
        raise BenchError("; ".join(m for m, _ in problems), Exit.FAILED, problems[0][1])
    if not chosen:
        raise BenchError("no enabled llama server is running to bench: " + "; ".join(m for m, _ in skipped),
                         Exit.FAILED, skipped[0][1] if skipped else Runbook.SERVER_CRASH)
    return chosen, [m for m, _ in skipped]


# ------------------------------------------------------------------------------ one role

def cap_levels(asked: tuple[int, ...], slots: int | None) -> tuple[list[int], dict[int, list[int]]]:
    """The levels to run (in the order asked, each once) and, for each, the levels asked that
    it stands for: `--concurrency 1,2,4` on a 2-slot server runs 1 and 2, 2 standing for 2 and 4."""
    levels: list[int] = []
    stands_for: dict[int, list[int]] = {}
    for c in asked:
        level = min(c, slots) if slots and slots > 0 else c
        if level not in levels:
            levels.append(level)
        stands_for.setdefault(level, []).append(c)
    return levels, stands_for


def _engine_version_output(binary: str) -> str:
    """`llama-server --version` (a fraction of a second); "" when it cannot say."""
    try:
        done = subprocess.run([binary, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [l.strip() for l in (done.stdout + done.stderr).splitlines()
             if l.strip().lower().startswith(("version", "built with"))]
    return "; ".join(lines)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _metric(url: str, headers: dict[str, str]) -> float | None:
    code, body = load.get(url, "/metrics", headers)
    return stats.parse_metric(body.decode(errors="replace"), TOKENS_METRIC) if code == 200 else None


def _offload_words(recorded: object) -> str | None:
    found = offload.Offload.from_dict(recorded)
    return found.describe() if found else None


def _died(settings: Settings, name: str, where: str) -> str:
    seen = observe.observe(settings.logs_dir, name, health_url=None)
    why = seen.death() if seen.record is not None and seen.liveness is not procs.Liveness.OURS else "it stopped answering"
    tail = " | ".join(seen.log_tail[-3:])
    return (f"{name} exited during the bench ({where}): {why}" + (f"; last lines of its log: {tail}" if tail else "")
            + f"; see {Runbook.SERVER_CRASH.path}")


def bench_role(settings: Settings, spec: ServerSpec, seen: observe.Observed, options: Options, deadline: float,
               progress: Progress, clock: Callable[[], float] = time.perf_counter) -> RoleRun:
    """Bench one server (running, ours, healthy) and return its record, not yet saved."""
    engine = seen.record
    assert engine is not None
    name, url, headers = spec.name, engine.url, spec.auth
    argv = list(engine.argv)
    identity = engine.identity
    notes: list[str] = []

    def alive() -> bool:
        return procs.check(identity) is procs.Liveness.OURS

    info = load.props(url, headers)
    settings_of = info.get("default_generation_settings") if isinstance(info.get("default_generation_settings"), dict) else {}
    parallel = _int(records_.flag_value(argv, "--parallel"))
    ctx = _int(records_.flag_value(argv, "--ctx-size"))
    slots = _int(info.get("total_slots"))
    slots_from = "/props total_slots"
    if not slots:
        slots, slots_from = (parallel, "its --parallel") if parallel and parallel > 0 else (None, "")
    slot_ctx = _int(settings_of.get("n_ctx")) or (ctx // slots if ctx and slots else None)
    need = options.prompt_tokens + options.max_tokens + 8
    if slot_ctx and need > slot_ctx:
        raise BenchError(f"{name}: --prompt-tokens {options.prompt_tokens} + --max-tokens {options.max_tokens} do not "
                         f"fit in its context per slot ({slot_ctx} tokens): lower them, or raise "
                         f"{spec.var_prefix}CTX", Exit.USAGE, Runbook.CONFIGURATION)
    levels, stands_for = cap_levels(options.concurrency, slots)
    for level, asked in stands_for.items():
        over = [c for c in asked if c != level]
        if over:
            notes.append(f"concurrency {', '.join(map(str, over))} capped at {level}: {name} has {slots} slot"
                         f"{'s' if slots != 1 else ''} ({slots_from}); more streams than slots only queue")

    model_path = Path(engine.model)
    try:
        model = records_.model_identity(model_path)
    except OSError as exc:
        model = {"file": model_path.name, "bytes": None, "hash": None}
        notes.append(f"cannot read the model file to identify it ({exc.strerror or exc}): this run compares with none")

    # The prompt length: words, scaled once by what the server's tokenizer makes of a sample.
    words = prompts.words_for(options.prompt_tokens)
    counted = load.tokenize_count(url, headers, prompts.prompt(options.seed, 0, words))
    if counted:
        words = max(1, round(words * (options.prompt_tokens - 1) / counted))  # /completion adds a BOS token

    def body_for(index: int) -> dict:
        return load.completion_body(prompts.prompt(options.seed, index, words), options.max_tokens, options.seed)

    progress.event(name, f"warm-up ({options.max_tokens} tokens)")
    warm = load.stream_completion(url, body_for(WARMUP_INDEX), headers, deadline, WARMUP_INDEX, clock=clock)
    if not warm.ok:
        if not alive():
            raise BenchError(_died(settings, name, "warm-up"), Exit.FAILED, Runbook.SERVER_CRASH)
        raise BenchError(f"{name}: the warm-up request failed: {warm.error}", Exit.FAILED, Runbook.SERVER_CRASH)

    metrics_there = _metric(url, headers) is not None
    if not metrics_there:
        notes.append(f"{name} has no /metrics counters (llama-server's --metrics, {spec.var_prefix}METRICS=true): "
                     f"no cross-check against them")
    probe, gpu_note = gpu_probe(engine.pid)
    if gpu_note:
        notes.append(gpu_note)

    results: list[dict] = []
    failure = ""
    try:
        for level in levels:
            if clock() >= deadline:
                failure = f"the deadline ({options.deadline:g}s) passed before concurrency {level}"
                break
            progress.event(name, f"concurrency {level}: {options.requests} requests of {options.max_tokens} tokens")
            before = _metric(url, headers) if metrics_there else None
            cpu = time.process_time()
            with MemorySampler(engine.pid, gpu=probe, gpu_note=gpu_note) as sampler:
                ran = load.run_level(url, headers, level, options.requests, body_for, deadline, alive, clock=clock)
            cpu = time.process_time() - cpu
            after = _metric(url, headers) if metrics_there and alive() else None
            figures = stats.level_stats(level, options.requests, ran.results, ran.wall)
            check = (stats.MetricsCheck(int(after - before), figures.tokens)
                     if before is not None and after is not None else None)
            memory = sampler.stats()
            results.append({**figures.as_dict(), "asked": stands_for[level], "memory": memory.as_dict(),
                            "metrics": check.as_dict() if check else None, "client_cpu_s": round(cpu, 4),
                            "aborted": ran.aborted,
                            "samples": [[s.t, s.rss, s.gpu] for s in sampler.samples]})
            agreement = figures.agreement
            if agreement.ok is False:
                notes.append(f"concurrency {level}: the client's generation rate ({agreement.client:.2f} tok/s) and "
                             f"the server's own timings ({agreement.server:.2f} tok/s) disagree by "
                             f"{abs(agreement.ratio - 1) * 100:.0f}% (more than {agreement.tolerance:.0%})")
            if check is not None and not check.ok:
                notes.append(f"concurrency {level}: the server's {TOKENS_METRIC} rose by {check.predicted_delta}, "
                             f"fewer than the {check.received} tokens received")
            if figures.errors:
                failure = failure or (f"{figures.errors} of {len(ran.results)} requests failed at concurrency {level}"
                                      f" ({'; '.join(figures.error_samples)})")
            if ran.aborted:
                if not alive() or sampler.gone:
                    failure = _died(settings, name, f"concurrency {level}")
                else:
                    failure = (f"{ran.aborted} at concurrency {level}: {len(ran.results)} of {options.requests} "
                               f"requests done (--deadline {options.deadline:g}s)")
                break
    finally:
        if probe is not None:
            probe.close()

    threads = _int(records_.flag_value(argv, "--threads")) or spec.threads
    server = {
        "pid": engine.pid, "url": url, "flags": records_.flag_pairs(argv[1:]), "threads": threads, "ctx": ctx,
        "parallel": parallel, "batch": _int(records_.flag_value(argv, "--batch-size")),
        "ubatch": _int(records_.flag_value(argv, "--ubatch-size")),
        "n_gpu_layers": _int(records_.flag_value(argv, "--n-gpu-layers")),
        "flash_attn": records_.flag_value(argv, "--flash-attn"),
        "total_slots": slots, "slot_ctx": slot_ctx, "build_info": info.get("build_info"),
        # what start read from its load log: cpu, metal 81/81, cuda 20/81 (None: not known)
        "offload": _offload_words(engine.offload),
        "devices": list(engine.offload.get("devices") or []) if isinstance(engine.offload, dict) else [],
    }
    now = time.time()
    record = {
        "schema": records_.RECORD_SCHEMA, "role": name, "created_ts": now,
        "created_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": not failure and len(results) == len(levels),
        "kitty_ops": __version__, "host": records_.host_facts(),
        "engine": {"version": engine.engine_version, "binary": Path(engine.binary).name,
                   "version_output": _engine_version_output(engine.binary)},
        "model": model, "server": server,
        "options": {**options.as_dict(), "prompt_words": words},
        "levels": results, "notes": notes, "failure": failure, "yardstick": None,
    }
    run = RoleRun(name, record, notes=notes, failure=failure, model_path=str(model_path))
    if options.yardstick and not failure:
        _yardstick(settings, run, options, deadline, progress, clock)
    return run


def _yardstick(settings: Settings, run: RoleRun, options: Options, deadline: float, progress: Progress,
               clock: Callable[[], float]) -> None:
    binary = yardstick.find_llama_bench(settings.server_bin)
    if binary is None:
        run.failure = (f"--yardstick: no llama-bench beside {settings.server_bin} or on PATH (it comes with llama.cpp: "
                       f"Homebrew's llama.cpp, or a build's bin/); see {Runbook.ENGINE_BINARY.path}")
        return
    remaining = deadline - clock()
    if remaining < YARDSTICK_MIN_SECONDS:
        run.failure = f"--yardstick: {remaining:.0f}s left of the deadline ({options.deadline:g}s); raise --deadline"
        return
    server = run.record["server"]
    progress.event(run.name, f"yardstick: llama-bench -p {options.prompt_tokens} -n {options.max_tokens} "
                             f"-t {server['threads']} -r {yardstick.REPETITIONS} (the server is idle)")
    try:
        found, args = yardstick.run(binary, run.model_path, server["threads"],
                                    options.prompt_tokens, options.max_tokens, remaining,
                                    server["n_gpu_layers"], server["batch"], server["ubatch"], server["flash_attn"])
    except yardstick.YardstickError as exc:
        run.failure = f"--yardstick: {exc}"
        return
    single = next((l for l in run.record["levels"] if l["concurrency"] == 1), None)
    mine = single.get("gen_tps_p50") if single else None
    ratio = mine / found.tg_tps if mine and found.tg_tps else None
    run.record["yardstick"] = {**found.as_dict(), "argv": [Path(args[0]).name, *args[1:]],
                               "server_single_stream_tps": mine, "ratio": None if ratio is None else round(ratio, 3)}
    if single is None:
        run.notes.append("--yardstick: no concurrency 1 level, so no single-stream ratio (add 1 to --concurrency)")


# ------------------------------------------------------------------------------ the command

def bench(settings: Settings, names: tuple[str, ...], options: Options, progress: Progress = Silent(),
          clock: Callable[[], float] = time.perf_counter) -> Report:
    """Bench the chosen servers one after the other; save each run; compare each with the last
    comparable record. Raises BenchError when a server cannot be benched at all."""
    deadline = clock() + options.deadline
    chosen, skipped = select(settings, names)
    report = Report([], skipped)
    for at, (spec, seen) in enumerate(chosen):
        history = records_.load_all(settings.logs_dir, spec.name) if options.compare else []
        run = bench_role(settings, spec, seen, options, deadline, progress, clock)
        run.record["failure"] = run.failure
        if options.compare:
            previous = records_.last_comparable(history, run.record) if run.record["complete"] else None
            if previous is not None:
                run.comparison = records_.compare(previous[1], run.record, options.threshold, str(previous[0]))
                run.compared = str(previous[0])
                run.record["comparison"] = run.comparison.as_dict()
            elif run.record["complete"]:
                run.compared = ("nothing to compare with: no earlier run of the same role, model and options under "
                                f"{records_.bench_dir(settings.logs_dir)}")
            else:
                run.compared = "not compared: this run is incomplete"
        run.saved = records_.save(settings.logs_dir, run.record)
        report.roles.append(run)
        if clock() >= deadline and at + 1 < len(chosen):
            rest = [s.name for s, _ in chosen[at + 1:]]
            report.skipped.append(f"{', '.join(rest)}: not benched, the deadline ({options.deadline:g}s) passed")
            report.exit, report.message = Exit.FAILED, f"the deadline passed before {', '.join(rest)}"
            break
    _verdict(report, options)
    return report


def _verdict(report: Report, options: Options) -> None:
    failures = [f"{run.failure}" for run in report.roles if run.failure]
    regressions = [change.describe(run.name) for run in report.roles for change in run.regressions]
    if regressions:
        report.exit, report.runbook = Exit.FAILED, Runbook.BENCH_REGRESSION
        report.message = (f"regression beyond the {options.threshold:g}% threshold: " + "; ".join(regressions)
                          + f"; see {Runbook.BENCH_REGRESSION.path}")
    if failures:
        report.exit = Exit.FAILED
        report.runbook = report.runbook or Runbook.SERVER_CRASH
        report.message = "; ".join([*failures, *([report.message] if report.message else [])])
