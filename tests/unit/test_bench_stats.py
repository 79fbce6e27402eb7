"""The bench's arithmetic: percentiles, one request's rates on the client's clock against the
server's timings, a level's figures, the agreement and metrics cross-checks, prompts and events."""

from __future__ import annotations

import pytest

from kitty_ops.bench import load, prompts
from kitty_ops.bench.run import cap_levels
from kitty_ops.bench.stats import (Agreement, MetricsCheck, RequestResult, ServerTimings, level_stats, parse_metric,
                                   percentile)


def test_percentile_interpolates_between_ranks_like_numpy():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert percentile([1, 2, 3, 4], 0) == 1 and percentile([1, 2, 3, 4], 100) == 4
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def timings(predicted_n=16, predicted_ms=300.0, prompt_n=33, prompt_ms=110.0) -> ServerTimings:
    return ServerTimings(prompt_n, prompt_ms, prompt_n / prompt_ms * 1000, predicted_n, predicted_ms,
                         predicted_n / predicted_ms * 1000)


def test_rates_are_taken_after_the_first_token_on_both_clocks():
    r = RequestResult(0, started=10.0, ended=10.42, tokens=16, first_token=10.1, last_token=10.4, timings=timings())
    assert r.ttft == pytest.approx(0.1) and r.latency == pytest.approx(0.42)
    assert r.generation_rate == pytest.approx(15 / 0.3)
    # llama-server's own figure divides all 16 tokens by the time of the last 15
    assert r.timings.predicted_per_second == pytest.approx(16 / 0.3)
    assert r.timings.generation_rate == pytest.approx(15 / 0.3)
    assert r.prompt_rate == pytest.approx(33 / 0.1)
    assert RequestResult(1, 0.0, 1.0, tokens=1, first_token=0.5, last_token=0.5).generation_rate is None


def test_server_timings_read_from_the_final_event_or_none():
    parsed = ServerTimings.from_json({"prompt_n": 5, "prompt_ms": 10.5, "prompt_per_second": 476.2,
                                      "predicted_n": 8, "predicted_ms": 70.0, "predicted_per_second": 114.3})
    assert parsed.predicted_n == 8 and parsed.prompt_ms == 10.5
    assert ServerTimings.from_json({"prompt_n": 5}) is None
    assert ServerTimings.from_json(None) is None


def test_a_level_has_percentiles_aggregate_errors_and_agreement():
    results = [RequestResult(i, i * 0.5, i * 0.5 + 0.4 + i * 0.01, 16, i * 0.5 + 0.1, i * 0.5 + 0.4, timings())
               for i in range(4)]
    results.append(RequestResult(4, 2.0, 2.1, error="HTTP 500: boom"))
    stats = level_stats(2, 5, results, wall=2.0)
    assert (stats.completed, stats.errors, stats.tokens) == (4, 1, 64)
    assert stats.error_samples == ("HTTP 500: boom",)
    assert stats.aggregate_tps == pytest.approx(32.0)
    assert stats.gen_tps_p50 == pytest.approx(50.0)
    assert stats.latency_p95 >= stats.latency_p50 and stats.ttft_p95 >= stats.ttft_p50
    assert stats.prompt_tokens == 33
    assert stats.agreement.ok is True and stats.agreement.ratio == pytest.approx(1.0)
    data = stats.as_dict()
    assert data["agreement"]["ok"] is True and data["concurrency"] == 2


def test_disagreement_beyond_the_tolerance_is_flagged_and_missing_sides_are_unknown():
    assert Agreement(50.0, 100.0).ok is False
    assert Agreement(90.0, 100.0).ok is True
    assert Agreement(None, 100.0).ok is None


def test_metrics_counter_parsed_and_checked_against_tokens_received():
    text = ("# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n"
            "# TYPE llamacpp:tokens_predicted_total counter\n"
            "llamacpp:tokens_predicted_total 1234\n"
            "llamacpp:prompt_tokens_total 99\n"
            'labelled{slot="0"} 2\nlabelled{slot="1"} 3\n')
    assert parse_metric(text, "llamacpp:tokens_predicted_total") == 1234
    assert parse_metric(text, "labelled") == 5
    assert parse_metric(text, "absent") is None
    assert MetricsCheck(64, 64).ok and not MetricsCheck(60, 64).ok


def test_prompts_are_fixed_by_the_seed_and_differ_per_request():
    assert prompts.prompt(42, 0, 30) == prompts.prompt(42, 0, 30)
    assert prompts.prompt(42, 0, 30) != prompts.prompt(42, 1, 30)
    assert prompts.prompt(42, 0, 30) != prompts.prompt(43, 0, 30)
    assert len(prompts.prompt(42, 3, 30).split()) == 30
    # a known value: the same text on every machine (a changed prompt set starts a new series)
    assert prompts.prompt(7, 0, 5) == prompts.prompt(7, 0, 5) and prompts.prompt(7, 0, 5).endswith(".\n")
    assert prompts.words_for(128) == 126 and prompts.words_for(128, 2.0) == 63


def test_stream_events_and_their_tokens():
    assert load.parse_event(b'data: {"content": " the", "tokens": [279], "stop": false}\n') == {
        "content": " the", "tokens": [279], "stop": False}
    assert load.parse_event(b"\n") is None and load.parse_event(b"data: [DONE]\n") is None
    assert load.parse_event(b": comment\n") is None and load.parse_event(b"data: {broken\n") is None
    assert load.tokens_in({"content": " the", "tokens": [279]}) == 1
    assert load.tokens_in({"content": "", "tokens": [1, 2]}) == 2  # a held-back UTF-8 character
    assert load.tokens_in({"content": " a"}) == 1  # a build that sends no token ids
    assert load.tokens_in({"content": " a", "tokens": []}) == 1  # or an empty list of them
    assert load.tokens_in({"content": "", "stop": True, "timings": {}}) == 0
    body = load.completion_body("hi", 16, 42)
    assert body["stream"] and body["ignore_eos"] and body["cache_prompt"] is False and body["n_predict"] == 16
    assert body["temperature"] == 0 and body["seed"] == 42


def test_levels_above_the_slots_are_capped_and_said_so():
    assert cap_levels((1, 2, 4), 2) == ([1, 2], {1: [1], 2: [2, 4]})
    assert cap_levels((4, 1), 8) == ([4, 1], {4: [4], 1: [1]})
    assert cap_levels((1, 2), None) == ([1, 2], {1: [1], 2: [2]})
