"""Progress output: plain lines when piped, one live line per component on a terminal, and
never blocking the work when the stream stalls."""

from __future__ import annotations

import io
import os
import threading
import time

from kitty_ops import render


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    progress = render.progress_for(out)
    assert type(progress) is render.LineProgress
    progress.event("q4", "loading")
    progress.event("q4", "healthy after 1.0s")
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("q4           healthy after 1.0s")
    assert "\x1b" not in out.getvalue()


def test_live_display_rewrites_one_line_per_component(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    out = Tty()
    progress = render.progress_for(out)
    assert isinstance(progress, render.LiveProgress)
    progress.event("plan", "[llama:q4 compose:redis]")
    progress.event("q4", "loading")
    progress.event("redis", "starting")
    progress.event("q4", "healthy after 2.0s")
    progress.close()
    text = out.getvalue()
    assert "\x1b[2F\x1b[J" in text  # moved up over the two component lines to redraw them
    final_block = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert [line.split()[2] for line in final_block] == ["q4", "redis"]
    assert final_block[0].endswith("healthy after 2.0s")
    assert text.count("plan") == 1  # plan lines are printed once, above the live block


def test_a_stalled_stream_never_blocks_the_caller():
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        while True:
            os.write(write_fd, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_fd, True)
    stream = os.fdopen(write_fd, "w")
    progress = render.LineProgress(stream)
    started = time.monotonic()
    for i in range(100):
        progress.event("q4", f"event {i}")
    progress.close(wait=0.2)
    assert time.monotonic() - started < 1.0  # the events went to the queue, not the full pipe
    threading.Thread(target=lambda: os.read(read_fd, 1 << 20), daemon=True).start()
