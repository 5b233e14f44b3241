"""How `gkt bench` plans a run, without services: which tiers a mode restarts, what a row's reuse key holds, and
the requests each workload sends."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.datasets import Example
from benchmarks.gkt_bench import BenchConfig, row_fingerprint
from benchmarks.measure import CacheState
from benchmarks.prompts import workload_prompts
from benchmarks.runner import FIXED, ModeSpec, PolicySpec, RequestSettings, build_request
from shared.protocol.gkt.v1 import edge_pb2

MODELS = {"teacher": "T on vllm", "students": {"": "S on llamacpp", "a": "A", "b": "B"}}
QUESTIONS = [Example(id=f"q{i}", question=f"question {i}?", gold="1") for i in range(3)]


def test_a_tier_is_restarted_only_when_an_earlier_mode_used_it() -> None:
    state = CacheState()
    plan = []
    for spec in [
        ModeSpec("teacher"),
        ModeSpec("student", student="a"),  # the edge of "a" is still clean: teacher-only does not touch students
        ModeSpec("gkt", 10, "a"),  # the teacher was used: restart it, and with it every edge
        ModeSpec("student", student="b"),  # "b" was restarted with the teacher and not used since
        ModeSpec("student", student="b"),  # used just now: restart that edge only
        ModeSpec("gkt", 20, "b"),  # the teacher again
    ]:
        labels = state.restart_needed(spec)
        if labels is not False:
            state.restarted(labels)
        plan.append(labels)
        state.used(spec)
    assert plan == [False, False, None, False, ["b"], None]


def test_a_rows_reuse_key_holds_its_own_settings_only() -> None:
    config = BenchConfig(dataset="csqa", guidance_tokens=(10, 30), max_tokens=100).resolved()
    settings = RequestSettings(max_tokens=100, seed=0, stop=("\nQ:",))
    teacher = row_fingerprint(config, settings, QUESTIONS, MODELS, ModeSpec("teacher"))
    gkt = row_fingerprint(config, settings, QUESTIONS, MODELS, ModeSpec("gkt", 30))
    assert teacher["student"] is None and teacher["teacher"] == "T on vllm" and teacher["policy"] is None
    assert gkt["student"] == "S on llamacpp" and gkt["guidance_tokens"] == 30
    # Another policy list, or other K values, leave the existing rows' keys alone...
    more = replace(config, guidance_tokens=(10, 20, 30), policies=(FIXED, PolicySpec.parse("v=adaptive:floor=4")))
    assert row_fingerprint(more, settings, QUESTIONS, MODELS, ModeSpec("gkt", 30)) == gkt
    # ...while the row's own settings change it.
    assert row_fingerprint(config, replace(settings, max_tokens=50), QUESTIONS, MODELS, ModeSpec("teacher")) != teacher
    assert (
        row_fingerprint(replace(config, workload="chat"), settings, QUESTIONS, MODELS, ModeSpec("teacher")) != teacher
    )
    assert row_fingerprint(config, settings, QUESTIONS[:2], MODELS, ModeSpec("teacher")) != teacher
    assert row_fingerprint(replace(config, concurrency=8), settings, QUESTIONS, MODELS, ModeSpec("teacher")) != teacher
    no_restart = replace(config, restart_between_modes=False)
    assert row_fingerprint(no_restart, settings, QUESTIONS, MODELS, ModeSpec("teacher")) != teacher
    adaptive = ModeSpec("gkt", 30, policy=PolicySpec.parse("v=adaptive:floor=4"))
    assert row_fingerprint(config, settings, QUESTIONS, MODELS, adaptive) != gkt


def test_few_shot_sends_a_raw_prompt_and_chat_sends_a_conversation() -> None:
    example = Example(id="x", question="Where is fruit sold?", gold="B", choices=(("A", "bank"), ("B", "stand")))
    few_shot = workload_prompts("csqa", "fewshot")
    request = build_request(ModeSpec("gkt", 30), few_shot.question_input(example), RequestSettings(100, stop=("a",)))
    assert request.WhichOneof("input") == "prompt" and request.prompt.endswith("(B) stand\nA:")
    assert request.system_prompt == "" and request.guidance_tokens == 30 and list(request.sampling.stop) == ["a"]

    chat = workload_prompts("csqa", "chat")
    request = build_request(ModeSpec("teacher"), chat.question_input(example), RequestSettings(256, stop=chat.stop))
    assert request.WhichOneof("input") == "conversation" and request.mode == edge_pb2.MODE_TEACHER_ONLY
    [message] = request.conversation.messages
    assert (message.role, message.content) == ("user", "Where is fruit sold?\nAnswer Choices: (A) bank (B) stand")
    assert request.system_prompt == chat.system_prompt and "So the answer is (X)." in chat.system_prompt
    assert list(request.sampling.stop) == [] and not request.HasField("guidance_tokens")
    # Both workloads keep the same exemplars out of the evaluation set, so they ask the same questions.
    assert chat.exemplar_questions() == few_shot.exemplar_questions() and chat.shots == 0 and few_shot.shots == 7
    gsm8k = workload_prompts("gsm8k", "chat")
    assert "The answer is N." in gsm8k.system_prompt and "Do not write code" in gsm8k.system_prompt


def test_a_verify_policy_parses_with_its_options_and_names_bad_ones() -> None:
    spec = PolicySpec.parse("v=verify:draft=6,k=0,rule=min_teacher_prob,tau=0.3,minprob=0.2,correction=2")
    assert spec.name == "v" and spec.guidance_tokens == 0
    policy = spec.policy
    assert policy.kind == edge_pb2.GuidancePolicy.KIND_VERIFY and policy.draft_tokens == 6
    assert policy.acceptance == edge_pb2.GuidancePolicy.ACCEPTANCE_MIN_TEACHER_PROB
    assert abs(policy.min_teacher_prob - 0.3) < 1e-6 and abs(policy.draft_min_prob - 0.2) < 1e-6
    assert policy.correction_tokens == 2
    for bad in ("v=verify:rule=loose", "v=verify:drafts=8", "v=sometimes"):
        with pytest.raises(ValueError):
            PolicySpec.parse(bad)
