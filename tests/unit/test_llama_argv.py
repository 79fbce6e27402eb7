"""llama: argv building, flag normalisation, redaction, help parsing, the real binary's flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kitty_ops.config import ServerSpec
from kitty_ops.llama import command as llama
from kitty_ops.llama.command import EngineInfo, build_argv, normalize_args, parse_help_flags, redact
from tests.harness import real_engine


def make_spec(**changes) -> ServerSpec:
    spec = ServerSpec(
        name="q4", enabled=True, model=Path("/models/q4.gguf"), port=8083, bind="127.0.0.1",
        ctx=16384, threads=8, batch=4096, ubatch=1024, parallel=4, n_gpu_layers=999,
        flash_attn="on", alias="kitty-q4", mmproj=None, extra_args=(), jinja=True, metrics=True,
    )
    return dataclasses.replace(spec, **changes)


def value_after(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def test_default_argv():
    argv = build_argv(make_spec(), "/bin/llama-server")
    assert argv[0] == "/bin/llama-server"
    assert value_after(argv, "--model") == "/models/q4.gguf"
    assert value_after(argv, "--host") == "127.0.0.1"
    assert value_after(argv, "--port") == "8083"
    assert value_after(argv, "--n-gpu-layers") == "999"
    assert value_after(argv, "--ctx-size") == "16384"
    assert value_after(argv, "--threads") == "8"
    assert value_after(argv, "--batch-size") == "4096"
    assert value_after(argv, "--ubatch-size") == "1024"
    assert value_after(argv, "--parallel") == "4"
    assert value_after(argv, "--alias") == "kitty-q4"
    assert value_after(argv, "--flash-attn") == "on"
    assert "--jinja" in argv
    assert "--metrics" in argv
    assert "--mmproj" not in argv
    assert all(isinstance(t, str) for t in argv)


def test_jinja_and_metrics_can_be_turned_off():
    argv = build_argv(make_spec(jinja=False, metrics=False), "llama-server")
    assert "--jinja" not in argv and "--metrics" not in argv


def test_mmproj_only_when_set():
    argv = build_argv(make_spec(mmproj=Path("/models/proj.gguf")), "llama-server")
    assert value_after(argv, "--mmproj") == "/models/proj.gguf"


def test_extra_args_appended_normalised():
    extra = ("--temp", "0.2", "-ngl=40", "--cache-type-k=q8_0")
    argv = build_argv(make_spec(extra_args=extra), "llama-server")
    # `-ngl=40` is split and normalised (llama.cpp accepts neither '=' form), and as the
    # operator's value it replaces the generated --n-gpu-layers 999 instead of repeating it.
    assert argv[-6:] == ["--temp", "0.2", "--n-gpu-layers", "40", "--cache-type-k", "q8_0"]
    assert argv.count("--n-gpu-layers") == 1 and "999" not in argv


def test_extra_args_appended_after_generated_flags():
    argv = build_argv(make_spec(extra_args=("--no-webui",)), "llama-server")
    assert argv[-1] == "--no-webui"
    assert argv.index("--no-webui") > argv.index("--metrics")


def test_extra_args_override_generated_flags_once():
    spec = make_spec(extra_args=("-ngl", "20", "--ctx-size=4096", "-fa", "off", "--jinja",
                                 "--temp", "0.1"))
    argv = build_argv(spec, "llama-server")
    assert value_after(argv, "--n-gpu-layers") == "20"
    assert value_after(argv, "--ctx-size") == "4096"
    assert value_after(argv, "--flash-attn") == "off"
    assert argv.count("--jinja") == 1
    # The generated flags that were not overridden, and their values, are all still there.
    assert value_after(argv, "--threads") == "8"
    assert value_after(argv, "--parallel") == "4"
    assert "--metrics" in argv
    assert argv[-9:] == ["--n-gpu-layers", "20", "--ctx-size", "4096", "--flash-attn", "off",
                         "--jinja", "--temp", "0.1"]
    assert len(argv) == len(build_argv(make_spec(), "llama-server")) - 7 + 9


@pytest.mark.parametrize("spelling", ["-ngl", "--ngl", "--gpu-layers", "--n_gpu_layers",
                                      "--n-gpu-layers"])
def test_gpu_layer_spellings(spelling):
    assert normalize_args([spelling, "20"]) == ["--n-gpu-layers", "20"]


@pytest.mark.parametrize("short,long", [("-c", "--ctx-size"), ("-t", "--threads"),
                                        ("-b", "--batch-size"), ("-ub", "--ubatch-size"),
                                        ("-np", "--parallel"), ("-a", "--alias"),
                                        ("-m", "--model"), ("-mm", "--mmproj")])
def test_short_aliases(short, long):
    assert normalize_args([short, "x"]) == [long, "x"]


def test_flag_equals_value_is_split():
    assert normalize_args(["--ctx-size=4096", "--gpu-layers=10"]) == [
        "--ctx-size", "4096", "--n-gpu-layers", "10"]
    assert normalize_args(["--override-kv=a=b"]) == ["--override-kv", "a=b"]


def test_bare_flash_attn_gets_on_without_swallowing_next_flag():
    assert normalize_args(["--flash-attn", "--metrics"]) == ["--flash-attn", "on", "--metrics"]
    assert normalize_args(["-fa", "--jinja"]) == ["--flash-attn", "on", "--jinja"]
    assert normalize_args(["-fa"]) == ["--flash-attn", "on"]
    assert normalize_args(["--flash-attn"]) == ["--flash-attn", "on"]
    # A following argument that is not a flash-attn value stays its own argument.
    assert normalize_args(["-fa", "4"]) == ["--flash-attn", "on", "4"]


@pytest.mark.parametrize("value", ["off", "on", "auto", "OFF"])
def test_flash_attn_value_kept(value):
    assert normalize_args(["-fa", value]) == ["--flash-attn", value]
    assert normalize_args(["--flash-attn", value, "--metrics"]) == ["--flash-attn", value, "--metrics"]


def test_flash_attn_equals_form():
    assert normalize_args(["--flash-attn=off"]) == ["--flash-attn", "off"]


def test_negative_numbers_are_values_not_flags():
    assert normalize_args(["-ngl", "-1", "--seed", "-42", "--temp", "-0.5"]) == [
        "--n-gpu-layers", "-1", "--seed", "-42", "--temp", "-0.5"]
    assert llama.flags_in(["bin", "--n-gpu-layers", "-1", "--seed", "-42"]) == [
        "--n-gpu-layers", "--seed"]
    # A bare flash-attn followed by a negative number: the number is not eaten either.
    assert normalize_args(["-fa", "-1"]) == ["--flash-attn", "on", "-1"]


def test_managed_flags_in_extras():
    spec = make_spec(extra_args=("--port=9000", "-m", "x.gguf", "--temp", "0.1", "--host", "::"))
    assert llama.managed_flags_in_extras(spec) == ["--port", "--model", "--host"]
    assert llama.managed_flags_in_extras(make_spec(extra_args=("--temp", "0.1"))) == []


def test_redact_masks_api_key_values():
    argv = ["llama-server", "--port", "1", "--api-key", "s3cret", "--hf-token", "hf_abc",
            "-hft", "hf_def", "--metrics"]
    out = redact(argv)
    assert out == ["llama-server", "--port", "1", "--api-key", "***", "--hf-token", "***",
                   "-hft", "***", "--metrics"]
    assert argv[4] == "s3cret"  # the input is not changed
    joined = " ".join(out)
    assert "s3cret" not in joined and "hf_abc" not in joined and "hf_def" not in joined


def test_redact_masks_equals_form():
    out = redact(["llama-server", "--api-key=s3cret", "--metrics"])
    assert out == ["llama-server", "--api-key=***", "--metrics"]


def test_redact_masks_equals_form_as_last_argument():
    # An `--api-key=...` at the very end of the argv (the usual place for EXTRA_ARGS) is a
    # secret like any other.
    out = redact(["llama-server", "--metrics", "--api-key=s3cret"])
    assert "s3cret" not in " ".join(out)
    assert out[-1] == "--api-key=***"
    # normalize_args does not split short flags, so `-hft=...` from EXTRA_ARGS reaches redact
    # (and the log line lifecycle writes) as one last token.
    argv = build_argv(make_spec(extra_args=("-hft=hf_s3cret",)), "llama-server")
    assert "hf_s3cret" not in " ".join(redact(argv))


def test_redact_leaves_other_values():
    argv = ["llama-server", "--alias", "kitty-q4", "--api-key-file", "/etc/key"]
    assert redact(argv) == argv


HELP_EXCERPT = """\
----- common params -----

-h,    --help, --usage                  print usage and exit
--version                               show version and build info
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
                                        (env: LLAMA_ARG_THREADS)
-c,    --ctx-size N                     size of the prompt context (default: 4096, 0 = loaded from
                                        model)
-m,    --model FNAME                    model path to load
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM, either an exact number,
                                        'auto', or 'all' (default: auto)
                                        --not-a-flag-in-a-continuation
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
--jinja, --no-jinja                     whether to use jinja template engine for chat (default: enabled)
--mmproj-auto, --no-mmproj, --no-mmproj-auto
                                        whether to use multimodal projector file (if available), e.g. -x, -y
-mm,   --mmproj FILE                    path to a multimodal projector file
--metrics                               enable prometheus compatible metrics endpoint (default: disabled)
--host HOST                             ip address to listen, or bind to an UNIX socket if the address ends
                                        with .sock (default: 127.0.0.1)
--port PORT                             port to listen (default: 8080)

----- example-specific params -----

--spec-draft-ngl, -ngld, --gpu-layers-draft, --n-gpu-layers-draft N
                                        number of layers to store in VRAM for the draft model
"""


def test_parse_help_flags_exact():
    assert parse_help_flags(HELP_EXCERPT) == {
        "-h", "--help", "--usage", "--version",
        "-t", "--threads", "-c", "--ctx-size", "-m", "--model",
        "-ngl", "--gpu-layers", "--n-gpu-layers",
        "-fa", "--flash-attn",
        "--jinja", "--no-jinja",
        "--mmproj-auto", "--no-mmproj", "--no-mmproj-auto",
        "-mm", "--mmproj", "--metrics", "--host", "--port",
        "--spec-draft-ngl", "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft",
    }


def test_parse_help_flags_stops_at_description_commas():
    flags = parse_help_flags("-x,  --xx N   does things, -y, --zz and more\n")
    assert flags == {"-x", "--xx"}


def test_engine_unknown_flags():
    engine = EngineInfo("/bin/llama-server", "1", parse_help_flags(HELP_EXCERPT))
    spec = make_spec(extra_args=("--no-jinja", "--cache-reuse", "256", "-fa"))
    argv = build_argv(spec, "/bin/llama-server")
    # The help excerpt lacks --batch-size, --ubatch-size, --parallel, --alias and --cache-reuse.
    assert engine.unknown_flags(argv) == ["--alias", "--batch-size", "--ubatch-size", "--parallel",
                                          "--cache-reuse"]
    full = EngineInfo("/bin/llama-server", "1", set(llama.flags_in(argv)))
    assert full.unknown_flags(argv) == []
    # With no parsed flags at all, nothing is guessed.
    assert EngineInfo("/bin/llama-server", "1", set()).unknown_flags(argv) == []


def test_version_line():
    assert llama._version_line("ggml_init\nversion: 6130 (abc123)\nbuilt with cc") == "6130 (abc123)"
    assert llama._version_line("b4567 something\nmore") == "b4567 something"
    assert llama._version_line("") == "unknown"


def test_probe_caches_by_binary(tmp_path):
    script = tmp_path / "engine"
    script.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'version: 42 (x)'; "
                      "else echo '--foo N     the foo'; echo '-b,  --bar   the bar'; fi\n")
    script.chmod(0o755)
    cache = tmp_path / "cache"
    info = EngineInfo.probe(str(script), cache_dir=cache)
    assert info.version == "42 (x)"
    assert info.flags == {"--foo", "-b", "--bar"}
    assert len(list(cache.glob("engine-*.json"))) == 1
    # Cached: the same answer without running it (the script is now broken, mtime kept).
    stat = script.stat()
    script.write_text("#!/bin/sh\nexit 3\n" + " " * (len(script.read_text()) - 17))
    import os
    os.utime(script, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert script.stat().st_size == stat.st_size
    again = EngineInfo.probe(str(script), cache_dir=cache)
    assert again.version == "42 (x)" and again.flags == info.flags


def test_resolve_binary(tmp_path):
    exe = tmp_path / "llama-server"
    exe.write_text("#!/bin/sh\n")
    assert llama.resolve_binary(str(exe)) is None  # not executable
    exe.chmod(0o755)
    assert llama.resolve_binary(str(exe)) == str(exe.resolve())
    assert llama.resolve_binary(str(tmp_path / "missing")) is None
    assert llama.resolve_binary("surely-not-a-binary-kitty-ops") is None


def test_real_engine_lists_flags_and_version(tmp_path):
    info = EngineInfo.probe(real_engine(), cache_dir=tmp_path / "cache")
    for flag in ("--flash-attn", "--n-gpu-layers", "--mmproj", "--metrics", "--model",
                 "--host", "--port", "--jinja", "--ctx-size", "--alias"):
        assert flag in info.flags, flag
    assert info.version.strip() != ""
    assert info.version != "unknown"
    # Everything kitty-ops generates by default is accepted by the real build.
    argv = build_argv(make_spec(mmproj=Path("/m/p.gguf")), real_engine())
    assert info.unknown_flags(argv) == []
