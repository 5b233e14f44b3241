"""The edge benchmark's fairness: the server's options and request as the installed llama_cpp.server reads them,
and the ratio and baseline-check arithmetic on made-up runs."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
from llama_cpp.server.settings import ModelSettings, Settings
from llama_cpp.server.types import CreateChatCompletionRequest

from benchmarks.edge_throughput import (
    SEED,
    baseline_check,
    concurrency_levels,
    llama_server_options,
    main,
    prompt_check,
    ratio_table,
    server_request_body,
    warnings,
)
from shared.llama.engine import EngineConfig


def test_server_options_match_the_edge_engine(tmp_path: Any) -> None:
    # Parsed exactly as `python -m llama_cpp.server` parses its command line.
    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    args = parser.parse_args(["--model", str(tmp_path / "model.gguf"), *llama_server_options(threads=3, n_ctx=1024)])
    settings = parse_model_from_args(ModelSettings, args)
    engine = EngineConfig(model_path=tmp_path / "model.gguf", n_threads=3, n_ctx_per_slot=1024)
    assert settings.flash_attn is engine.flash_attention is True
    assert settings.n_threads == settings.n_threads_batch == engine.n_threads
    assert settings.n_ctx == engine.n_ctx_per_slot
    assert settings.logits_all is False
    assert settings.chat_format == "chat_template.default"
    assert settings.seed == SEED


def test_server_request_samples_like_the_edge() -> None:
    body = server_request_body(3, max_tokens=64)
    request = CreateChatCompletionRequest.model_validate(body)
    assert set(body) <= set(CreateChatCompletionRequest.model_fields), "a field the server would silently ignore"
    assert request.temperature == 0.0 and request.seed == SEED and request.max_tokens == 64
    # Neutral everywhere the server's defaults are not: no repeat penalty, no truncation of the distribution.
    assert request.repeat_penalty == 1.0
    assert (request.top_k, request.top_p, request.min_p) == (0, 1.0, 0.0)
    assert request.presence_penalty == request.frequency_penalty == 0.0


def level(tokens_per_s: float) -> dict[str, float]:
    return {"tokens_per_s": tokens_per_s, "p50_s": 1.0, "p95_s": 1.0}


def systems(server_at_1: float) -> dict[str, dict[str, Any]]:
    return {
        "edge_batched": {"1": level(80.0), "8": level(160.0)},
        "edge_one_at_a_time": {"1": level(100.0), "8": level(100.0)},
        "llama_cpp_server": {"1": level(server_at_1), "8": level(80.0)},
    }


def test_ratios_per_level() -> None:
    ratios = ratio_table(systems(95.0), [1, 8])
    assert ratios["8"] == {"batched_edge_over_llama_cpp_server": 2.0, "batched_edge_over_one_slot_edge": 1.6}
    assert ratios["1"]["batched_edge_over_one_slot_edge"] == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("server_at_1", "passed"), [(95.0, True), (110.0, True), (89.0, False), (111.0, False), (90.0, True)]
)
def test_baseline_check_within_ten_percent_of_the_one_slot_edge(server_at_1: float, passed: bool) -> None:
    check = baseline_check(systems(server_at_1))
    assert check["passed"] is passed
    assert check["server_over_one_slot_edge"] == pytest.approx(server_at_1 / 100.0)
    assert check["batched_edge_over_server"] == pytest.approx(80.0 / server_at_1)
    assert check["tolerance"] == 0.10


def test_baseline_check_needs_concurrency_1_and_warnings_say_so() -> None:
    runs = {name: {"8": levels["8"]} for name, levels in systems(100.0).items()}
    check = baseline_check(runs)
    assert check["passed"] is None and check["server_over_one_slot_edge"] is None
    same = {"prompt_tokens": 40, "completion_tokens": 8, "text": "Once"}
    results = {"baseline_check": check, "prompt_check": prompt_check({"a": same, "b": same})}
    assert warnings(results) == ["concurrency 1 was not measured: the baseline check did not run"]


def test_warnings_for_a_failed_check_and_different_prompts() -> None:
    answers = {
        "edge": {"prompt_tokens": 40, "completion_tokens": 8, "text": "Once"},
        "server": {"prompt_tokens": 31, "completion_tokens": 8, "text": "Once"},
    }
    checked = prompt_check(answers)
    assert checked == {"prompt_tokens": {"edge": 40, "server": 31}, "same_prompt_tokens": False, "same_text": True}
    found = warnings({"baseline_check": baseline_check(systems(68.0)), "prompt_check": checked})
    assert len(found) == 2
    assert "0.68x the one-slot edge" in found[0] and "10%" in found[0]
    assert "different lengths" in found[1]


def test_concurrency_levels_are_checked() -> None:
    assert concurrency_levels("1,2,4,8,16") == [1, 2, 4, 8, 16]
    for bad in ("1,x", "0,2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            concurrency_levels(bad)
    with pytest.raises(SystemExit) as refused:
        main(["--concurrency", "2,-1"])
    assert refused.value.code == 2
