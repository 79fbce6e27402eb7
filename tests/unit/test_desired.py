"""The operator's intent record (kitty_ops.host.desired): pure merge, atomic 0600 file,
unreadable files read as "no intent"."""

from __future__ import annotations

import os
import stat

import pytest

from kitty_ops.host import desired


def test_merge_sets_only_the_named_components():
    current = {"llama:q4": desired.Intent("up", "start", 1.0), "llama:f16": desired.Intent("up", "start", 1.0)}
    after = desired.merged(current, ["llama:q4"], desired.DOWN, "stop", 2.0)
    assert after["llama:q4"] == desired.Intent("down", "stop", 2.0)
    assert after["llama:f16"] == current["llama:f16"]
    assert current["llama:q4"].want == "up"  # the input is not changed


def test_merge_refuses_unknown_wants():
    with pytest.raises(ValueError):
        desired.merged({}, ["llama:q4"], "sideways", "x", 0)


def test_mark_writes_atomically_and_private(tmp_path):
    desired.mark(tmp_path, ["llama:q4", "compose:redis"], desired.UP, "start", now=5.0)
    desired.mark(tmp_path, ["compose:redis"], desired.DOWN, "stop", now=6.0)
    path = desired.path(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    found = desired.load(tmp_path)
    assert found == {"llama:q4": desired.Intent("up", "start", 5.0),
                     "compose:redis": desired.Intent("down", "stop", 6.0)}
    assert desired.wanted_up(found) == {"llama:q4"}
    assert [p.name for p in tmp_path.iterdir()] == ["desired.json"]  # no temporary file left


def test_nothing_to_mark_writes_nothing(tmp_path):
    desired.mark(tmp_path, [], desired.UP, "start")
    assert not desired.path(tmp_path).exists()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"components": {"llama:q4": {"want": "maybe"}}}',
                                  '{"components": {"llama:q4": 3}}'])
def test_unreadable_intent_is_no_intent(tmp_path, text):
    desired.path(tmp_path).write_text(text)
    assert desired.load(tmp_path) == {}
