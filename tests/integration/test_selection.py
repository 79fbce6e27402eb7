"""Selecting components (--only, and leaving some out) on the native tier (fake servers, compose off): what an operator selects is
exactly what starts and stops; an unknown name is a usage error that lists the known ones."""

from __future__ import annotations

from tests.harness import alive


def test_only_starts_just_that_server_and_skip_leaves_one_out(project):
    project.fake_env({"q4": "", "f16": "", "summary": ""})
    code, out = project.json("start", "--only", "q4")
    assert code == 0, out
    assert [c["name"] for c in out["components"]] == ["q4"]
    assert out["plan"] == [["llama:q4"]]

    code, out = project.json("start", "--skip", "summary")
    assert code == 0, out
    assert {c["name"]: c["action"] for c in out["components"]} == {"q4": "already-running", "f16": "started"}
    assert not (project.logs / "llamacpp-summary.pid").exists()

    code, out = project.json("stop", "--skip", "q4")
    assert code == 0, out
    assert alive(project.record("q4")["pid"])
    assert not (project.logs / "llamacpp-f16.pid").exists()


def test_an_unknown_name_is_a_usage_error_naming_the_known_ones(project):
    project.fake_env({"q4": ""})
    done = project.run("start", "--only", "q5")
    assert done.returncode == 2
    assert "unknown component(s): q5" in done.stderr
    assert "q4" in done.stderr and "llama" in done.stderr
    assert not list(project.logs.glob("llamacpp-*.pid"))
