"""Runs every question through the edge in one mode over gRPC, C requests in flight, and scores each answer."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from tqdm import tqdm

from benchmarks.answers import judge
from benchmarks.datasets import Dataset, Example
from benchmarks.prompts import Prompts, QuestionInput
from shared.protocol.convert import degraded_reason_name, finish_reason_name, guidance_end_name, mode_name_to_pb
from shared.protocol.domain import ModeName
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc

MODE_NAMES: tuple[ModeName, ...] = ("teacher", "student", "gkt")  # the order a benchmark runs them in
USAGE_FIELDS = (
    "teacher_prompt_tokens",
    "teacher_completion_tokens",
    "teacher_cached_prompt_tokens",
    "student_prompt_tokens",
    "student_completion_tokens",
    "student_guidance_tokens",
    "student_cached_prompt_tokens",
)


_RULES = {
    "strict": edge_pb2.GuidancePolicy.ACCEPTANCE_STRICT,
    "min_teacher_prob": edge_pb2.GuidancePolicy.ACCEPTANCE_MIN_TEACHER_PROB,
    "speculative": edge_pb2.GuidancePolicy.ACCEPTANCE_SPECULATIVE,
}
# What a verify answer reports of its checks (`Verification` in edge.proto).
VERIFICATION_FIELDS = (
    "rounds",
    "draft_tokens",
    "accepted_tokens",
    "corrected_tokens",
    "teacher_scored_tokens",
    "teacher_passes",
)


@dataclass(frozen=True)
class PolicySpec:
    """A named guidance policy of a run: `fixed`, or adaptive with its settings (unset ones: the edge's)."""

    name: str
    policy: edge_pb2.GuidancePolicy
    guidance_tokens: int | None = None  # the one K it runs at (None: every K of the run)

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        """`fixed`, `adaptive`, `verify`, or `NAME=adaptive:floor=8,window=4,top1=1.0,logprob=-1.0,escalate` (also
        `entropy=2.5`, `run=3`, `bursts=2`, `burst=8`), `NAME=verify:draft=8,rule=strict,tau=0.2,minprob=0.3,
        correction=1` (teacher-verified drafting), and `k=80` to run it at that K only: a name for the results and
        the policy's settings."""
        name, _, definition = text.partition("=") if "=" in text.split(":")[0] else (text, "", text)
        kind, _, options = definition.partition(":")
        kinds = {
            "fixed": edge_pb2.GuidancePolicy.KIND_FIXED,
            "adaptive": edge_pb2.GuidancePolicy.KIND_ADAPTIVE,
            "verify": edge_pb2.GuidancePolicy.KIND_VERIFY,
        }
        if kind not in kinds:
            raise ValueError(f"a policy is fixed, adaptive or verify, got {kind!r} in {text!r}")
        policy = edge_pb2.GuidancePolicy(kind=kinds[kind])
        fields = {"floor": "floor_tokens", "window": "window", "top1": "min_top1_fraction"}
        fields |= {"logprob": "min_mean_logprob", "entropy": "entropy_threshold", "run": "entropy_run"}
        fields |= {"bursts": "max_bursts", "burst": "burst_tokens"}
        fields |= {"draft": "draft_tokens", "tau": "min_teacher_prob", "minprob": "draft_min_prob"}
        fields |= {"correction": "correction_tokens"}
        floats = ("min_top1_fraction", "min_mean_logprob", "entropy_threshold", "min_teacher_prob", "draft_min_prob")
        only_k: int | None = None
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key == "escalate":
                policy.escalate = True
            elif key == "k":
                only_k = int(value)
            elif key == "rule":
                if value not in _RULES:
                    raise ValueError(f"rule is one of {', '.join(_RULES)}, got {value!r} in {text!r}")
                policy.acceptance = _RULES[value]
            elif key in fields:
                setattr(policy, fields[key], (float if fields[key] in floats else int)(value))
            else:
                known = ", ".join([*fields, "escalate", "rule", "k"])
                raise ValueError(f"unknown policy option {key!r} in {text!r}; known: {known}")
        return cls(name, policy, only_k)


FIXED = PolicySpec("fixed", edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_FIXED))


@dataclass(frozen=True)
class ModeSpec:
    """One row of the results: a mode, K and the guidance policy for GKT, and which student when a run compares
    several."""

    mode: ModeName
    guidance_tokens: int | None = None
    student: str | None = None  # None: the run has one student (or this is the teacher-only row)
    policy: PolicySpec = FIXED

    @property
    def key(self) -> str:
        base = f"gkt@{self.guidance_tokens}" if self.mode == "gkt" else self.mode
        if self.mode == "gkt" and self.policy.name != "fixed":
            base += f"/{self.policy.name}"
        return f"{base}:{self.student}" if self.student else base


@dataclass(frozen=True)
class RequestSettings:
    """What every request of a run shares."""

    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    timeout_seconds: float = 1800.0


@dataclass
class AnswerRecord:
    """One question answered in one mode: the text, how it scored, its usage and latency (or the RPC error)."""

    index: int
    example_id: str
    gold: str
    outcome: str  # "correct" | "wrong" | "unparsed" | "failed" (RPC error)
    extracted: str | None = None
    text: str = ""
    guidance_text: str = ""
    student_text: str = ""
    finish_reason: str = ""
    degraded: bool = False
    degraded_reason: str = ""
    error: str = ""
    latency_seconds: float = 0.0
    guidance_end: str = ""  # why the guidance ended ("k_reached", "student_agreed", ...), GKT mode
    bursts: int = 0  # teacher bursts an unsure student asked for
    verification: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERIFICATION_FIELDS, 0))
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))
    # The edge's own durations of this request (seconds, `Timings` in the proto), for diagnosis.
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ModeRun:
    """Every answer of one mode and the wall time of the whole pass (first request sent to last answer)."""

    spec: ModeSpec
    records: list[AnswerRecord]
    wall_seconds: float
    # CPU seconds the teacher's and the edge's process trees used during the pass (None: not measured, e.g. a
    # service the bench did not start and was not told the process of).
    teacher_cpu_seconds: float | None = None
    edge_cpu_seconds: float | None = None
    # Restarting and warming the services before the pass, to give it a clean cache (not in `wall_seconds`).
    restart_seconds: float = 0.0


def build_request(spec: ModeSpec, question: QuestionInput | str, settings: RequestSettings) -> edge_pb2.GenerateRequest:
    """A raw completion-style request (a few-shot prompt) or a chat request (system prompt and one user message);
    K is set in GKT mode only."""
    if isinstance(question, str):
        question = QuestionInput(prompt=question)
    request = edge_pb2.GenerateRequest(
        system_prompt=question.system_prompt,
        mode=mode_name_to_pb(spec.mode),
        max_tokens=settings.max_tokens,
        sampling=common_pb2.Sampling(temperature=settings.temperature, seed=settings.seed, stop=list(settings.stop)),
    )
    if question.prompt is not None:
        request.prompt = question.prompt
    else:
        request.conversation.messages.add(role="user", content=question.user or "")
    if spec.mode == "gkt":
        request.guidance_tokens = spec.guidance_tokens or 0
        request.guidance_policy.CopyFrom(spec.policy.policy)
    return request


async def answer_one(
    stub: edge_pb2_grpc.EdgeServiceStub,
    spec: ModeSpec,
    index: int,
    example: Example,
    dataset: Dataset,
    prompts: Prompts,
    settings: RequestSettings,
) -> AnswerRecord:
    """One question; an RPC error is recorded as a failure (never retried, never hidden)."""
    record = AnswerRecord(index=index, example_id=example.id, gold=example.gold, outcome="failed")
    started = time.perf_counter()
    try:
        response = await stub.Generate(
            build_request(spec, prompts.question_input(example), settings), timeout=settings.timeout_seconds
        )
    except grpc.aio.AioRpcError as error:
        record.latency_seconds = time.perf_counter() - started
        record.error = f"{error.code().name}: {error.details()}"
        return record
    record.latency_seconds = time.perf_counter() - started
    judgement = judge(dataset, response.text, example)
    record.outcome, record.extracted = judgement.outcome, judgement.extracted
    record.text = response.text
    record.guidance_text, record.student_text = response.guidance_text, response.student_text
    record.finish_reason = finish_reason_name(response.finish_reason)
    record.degraded, record.degraded_reason = response.degraded, degraded_reason_name(response.degraded_reason)
    record.usage = {name: int(getattr(response.usage, name)) for name in USAGE_FIELDS}
    record.guidance_end, record.bursts = guidance_end_name(response.guidance_end), len(response.bursts)
    record.verification = {name: int(getattr(response.verification, name)) for name in VERIFICATION_FIELDS}
    record.timings = {f.name: float(getattr(response.timings, f.name)) for f in response.timings.DESCRIPTOR.fields}
    return record


async def run_mode(
    stub: edge_pb2_grpc.EdgeServiceStub,
    spec: ModeSpec,
    examples: Sequence[Example],
    *,
    dataset: Dataset,
    prompts: Prompts,
    settings: RequestSettings,
    concurrency: int,
    progress: bool = True,
) -> ModeRun:
    """All `examples` in one mode with at most `concurrency` requests in flight, a progress bar on stderr."""
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(examples), desc=f"{dataset} {spec.key}", unit="q", file=sys.stderr, disable=not progress)
    counts: dict[str, int] = {"correct": 0, "unparsed": 0, "failed": 0}

    async def one(index: int, example: Example) -> AnswerRecord:
        async with semaphore:
            record = await answer_one(stub, spec, index, example, dataset, prompts, settings)
        if record.outcome in counts:
            counts[record.outcome] += 1
        bar.set_postfix(counts, refresh=False)
        bar.update()
        return record

    started = time.perf_counter()
    try:
        records = await asyncio.gather(*(one(i, e) for i, e in enumerate(examples)))
    finally:
        bar.close()
    return ModeRun(spec, list(records), time.perf_counter() - started)


def record_to_json(record: AnswerRecord, spec: ModeSpec) -> dict[str, Any]:
    """One line of the per-answer JSONL file."""
    return {"mode": spec.key, **asdict(record)}
