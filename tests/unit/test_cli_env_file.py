"""`--env-file` before the verb means the same as after it (as `docker compose --env-file X ps`
users type it), for every verb that reads configuration; given twice with two files, it is a
usage error naming both."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kitty_ops import cli as kitty_cli


def env(tmp_path, name: str, port: int):
    path = tmp_path / name
    path.write_text(f"LLAMACPP_SERVERS=q4\nLLAMACPP_Q4_MODEL=x.gguf\nLLAMACPP_Q4_PORT={port}\n"
                    f"KITTY_COMPOSE_ENABLED=false\nKITTY_LOGS_DIR={tmp_path / 'logs'}\n")
    return path


def invoke(*args: str):
    return CliRunner().invoke(kitty_cli.cli, list(args), catch_exceptions=False)


def test_env_file_before_the_verb_is_the_same_as_after_it(tmp_path):
    path = env(tmp_path, "a.env", 18083)
    before, after = invoke("--env-file", str(path), "status", "--json"), invoke("status", "--env-file", str(path), "--json")
    assert before.exit_code == after.exit_code == 0, before.output
    when = ("checked_at", "seconds")  # when the look ran and how long it took differ, nothing else
    assert ({k: v for k, v in json.loads(before.output).items() if k not in when}
            == {k: v for k, v in json.loads(after.output).items() if k not in when})
    q4 = next(c for c in json.loads(before.output)["components"] if (c["tier"], c["name"]) == ("llama", "q4"))
    assert q4["ports"] == ["127.0.0.1:18083"]  # the file was read


@pytest.mark.parametrize("verb", [c for c in kitty_cli.cli.commands.values()
                                  if any(p.name == "env_file" for p in c.params)], ids=lambda c: c.name)
def test_every_verb_that_reads_configuration_takes_it_through_the_one_option(verb):
    option = next(p for p in verb.params if p.name == "env_file")
    assert option.callback is kitty_cli._env_file_here_or_before


def test_two_different_env_files_are_a_usage_error_naming_both(tmp_path):
    a, b = env(tmp_path, "a.env", 18083), env(tmp_path, "b.env", 18084)
    done = invoke("--env-file", str(a), "status", "--env-file", str(b))
    assert done.exit_code == 2
    assert str(a) in done.output and str(b) in done.output
