"""The bench for people (a table per run, then what explains and qualifies it) and for machines
(`kitty-ops/bench/v1`, through kitty_ops.formats.to_json). No logic, no I/O beyond the streams
it is handed."""

from __future__ import annotations

from typing import IO

from kitty_ops.bench.run import Report, RoleRun
from kitty_ops.formats import size, table, to_json

HEADERS = ["ROLE", "CONC", "DONE", "ERR", "TTFT p50", "TTFT p95", "GEN tok/s", "SERVER tok/s", "AGG tok/s",
           "PROMPT tok/s", "LAT p50", "LAT p95", "RSS peak", "RSS avg", "GPU peak"]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def rows(run: RoleRun) -> list[tuple]:
    out = []
    for level in run.record["levels"]:
        memory = level["memory"]
        conc = str(level["concurrency"])
        if level["asked"] != [level["concurrency"]]:
            conc += f" (asked {','.join(map(str, level['asked']))})"
        out.append((run.name, conc, f"{level['completed']}/{level['requests']}", level["errors"],
                    _ms(level["ttft_p50"]), _ms(level["ttft_p95"]), _rate(level["gen_tps_p50"]),
                    _rate(level["server_gen_tps_p50"]), _rate(level["aggregate_tps"]), _rate(level["prompt_tps_p50"]),
                    _s(level["latency_p50"]), _s(level["latency_p95"]), size(memory["rss_peak"]),
                    size(memory["rss_avg"]), size(memory["gpu_peak"])))
    return out


def _about(run: RoleRun) -> str:
    r = run.record
    model, server, options, engine = r["model"], r["server"], r["options"], r["engine"]
    measured = next((l["prompt_tokens"] for l in r["levels"] if l.get("prompt_tokens")), None)
    prompt = f"prompts of ~{options['prompt_tokens']} tokens" + (f" ({measured} as the server counted)" if measured else "")
    return (f"{run.name}: {model['file']} ({size(model['bytes'])}, {model['hash'] or 'unhashed'}), engine "
            f"{engine['version']}, offload {server.get('offload') or 'unknown'}, threads {server['threads']}, "
            f"ctx {server['ctx']}, {server['total_slots'] or '?'} "
            f"slot(s); {prompt}, {options['max_tokens']} tokens out, {options['requests']} requests per level, "
            f"seed {options['seed']}")


def text(report: Report, out: IO[str], err: IO[str]) -> None:
    all_rows = [row for run in report.roles for row in rows(run)]
    if all_rows:
        out.write(table(all_rows, HEADERS) + "\n")
        out.write("GEN: per request, client clock (tokens after the first / time after the first), median; SERVER: "
                  "the server's own predicted_per_second, median; AGG: all tokens / the level's wall time\n")
    for run in report.roles:
        out.write("\n" + _about(run) + "\n")
        for level in run.record["levels"]:
            memory = level["memory"]
            if memory["gpu_peak"] is not None:
                out.write(f"  concurrency {level['concurrency']}: GPU memory ({memory['gpu_source']}, "
                          f"{memory['gpu_scope']}) peak {size(memory['gpu_peak'])}, average {size(memory['gpu_avg'])}\n")
            if level.get("metrics"):
                m = level["metrics"]
                out.write(f"  concurrency {level['concurrency']}: server counted {m['tokens_predicted_delta']} tokens "
                          f"generated, {m['tokens_received']} received {'(ok)' if m['ok'] else '(FEWER: see notes)'}\n")
        for note in run.notes:
            out.write(f"  note: {note}\n")
        stick = run.record.get("yardstick")
        if stick:
            ratio = stick["ratio"]
            out.write(f"  yardstick (llama-bench {stick['build']}, {stick['threads']} threads): pp{stick['n_prompt']} "
                      f"{_rate(stick['pp_tps'])} tok/s, tg{stick['n_gen']} {_rate(stick['tg_tps'])} tok/s; through "
                      f"the server, single stream: {_rate(stick['server_single_stream_tps'])} tok/s"
                      + (f" = {ratio:.2f}x llama-bench's tg" if ratio is not None else "") + "\n")
        if run.comparison is not None:
            c = run.comparison
            verdict = (f"{len(c.regressions)} regression(s)" if c.regressions
                       else f"no regression beyond {c.threshold:g}%")
            out.write(f"  compared with {c.against} ({c.against_created_at}): {verdict}\n")
            for change in c.changes:
                mark = "REGRESSION " if change.regression else ""
                out.write(f"    {mark}{change.describe(run.name)}\n")
            for difference in c.differences:
                out.write(f"    changed since: {difference}\n")
        elif run.compared:
            out.write(f"  {run.compared}\n")
        if run.saved:
            out.write(f"  saved {run.saved}\n")
    for skipped in report.skipped:
        err.write(f"skipped: {skipped}\n")
    if report.message:
        err.write(f"\nkitty-ops bench: {report.message}\n")
        if report.runbook and report.runbook.path not in report.message:
            err.write(f"  runbook: {report.runbook.path}\n")


def _role_json(run: RoleRun) -> dict:
    record = dict(run.record)
    record["levels"] = [{k: v for k, v in level.items() if k != "samples"} | {"samples": len(level.get("samples", []))}
                        for level in record["levels"]]
    return {"name": run.name, "saved": str(run.saved) if run.saved else None, "compared_with": run.comparison.against
            if run.comparison else None, "compared": run.compared,
            "comparison": run.comparison.as_dict() if run.comparison else None,
            "regressions": [c.as_dict() for c in run.regressions], "failure": run.failure or None, "notes": run.notes,
            "record": record}


def json_report(report: Report, out: IO[str]) -> None:
    to_json("bench", {"ok": int(report.exit) == 0, "exit_code": int(report.exit), "message": report.message or None,
                      "runbook": report.runbook.path if report.runbook else None, "skipped": report.skipped,
                      "roles": [_role_json(run) for run in report.roles]}, out)
