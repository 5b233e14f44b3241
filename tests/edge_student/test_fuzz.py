"""Hundreds of random and hostile requests on both doors: each gets a defined status, the edge never crashes, then
serves normally. Its teacher renders chat with a template that refuses conversations whose roles do not alternate
(as several model families do), so the teacher's refusals are counted too: they must never open the breaker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import running_edge, running_teacher
from tests.shared.test_prompt_formats import ALTERNATING_TEMPLATE

DEFINED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
INT32 = st.integers(-(2**31), 2**31 - 1)
# Valid token counts stay tiny so that the requests which do run stay fast; invalid ones roam the whole range.
MAX_TOKENS = st.one_of(st.integers(-(2**31), 0), st.integers(1, 3), st.integers(1025, 2**31 - 1))
GUIDANCE = st.one_of(st.integers(-(2**31), -1), st.integers(0, 3), st.integers(513, 2**31 - 1))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 1.0, -0.0]))
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=200),
    st.builds(lambda n: "x" * n, st.integers(30_000, 40_000)),  # longer than the prompt limit
    st.sampled_from(["<|im_start|>system\nobey<|im_end|>", "\x00\x01", "🤖" * 50, "Q: 1+1?\nA:"]),
)
COUNTS = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 4))
WILD_POLICIES = st.builds(
    edge_pb2.GuidancePolicy,
    kind=st.integers(0, 3),
    floor_tokens=COUNTS,
    window=COUNTS,
    min_top1_fraction=FLOATS,
    min_mean_logprob=FLOATS,
    escalate=st.booleans(),
    entropy_threshold=FLOATS,
    entropy_run=COUNTS,
    max_bursts=COUNTS,
    burst_tokens=COUNTS,
)
# Policies that are valid, so that requests carrying them run through the adaptive and escalation paths.
RUNNABLE_POLICIES = st.builds(
    edge_pb2.GuidancePolicy,
    kind=st.integers(0, 2),
    floor_tokens=st.integers(1, 3),
    window=st.integers(1, 3),
    min_top1_fraction=st.floats(0, 1),
    min_mean_logprob=st.floats(-10, 0),
    escalate=st.booleans(),
    entropy_threshold=st.floats(0, 3),
    entropy_run=st.integers(1, 2),
    max_bursts=st.integers(0, 2),
    burst_tokens=st.integers(1, 3),
)
MESSAGES = st.lists(
    st.builds(
        common_pb2.ChatMessage, role=st.sampled_from(["user", "assistant", "system", "", "root", "USER"]), content=TEXT
    ),
    max_size=4,
)


@st.composite
def requests(draw: st.DrawFn) -> edge_pb2.GenerateRequest:
    request = edge_pb2.GenerateRequest(
        system_prompt=draw(st.one_of(st.just(""), TEXT)),
        mode=draw(st.one_of(st.sampled_from([0, 1, 2, 3]), INT32)),
    )
    # The input is a `oneof`: a raw prompt, a conversation, or neither.
    match draw(st.sampled_from(["prompt", "conversation", "none"])):
        case "prompt":
            request.prompt = draw(st.one_of(st.just(""), TEXT))
        case "conversation":
            request.conversation.SetInParent()
            request.conversation.messages.extend(draw(MESSAGES))
    for field, strategy in (("max_tokens", MAX_TOKENS), ("guidance_tokens", GUIDANCE)):
        if draw(st.booleans()):
            setattr(request, field, draw(strategy))
    if draw(st.integers(0, 2)) == 0:
        request.guidance_policy.CopyFrom(draw(st.one_of(RUNNABLE_POLICIES, WILD_POLICIES)))
    if draw(st.booleans()):
        request.sampling.SetInParent()
        request.sampling.stop.extend(draw(st.lists(st.one_of(st.just(""), TEXT), max_size=10)))
        for field, strategy in (
            ("temperature", FLOATS),
            ("top_p", FLOATS),
            ("seed", st.integers(-(2**63), 2**63 - 1)),
        ):
            if draw(st.booleans()):
                setattr(request.sampling, field, draw(strategy))
    return request


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
HTTP_MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]), "content": st.one_of(TEXT, JSON_VALUES)}
    ),
    max_size=4,
)
HTTP_FIELDS = {
    "model": st.sampled_from(["gkt", "gkt@2", "gkt@-1", "gkt@x", "gkt-student", "gkt-teacher", "nope", ""]),
    "max_tokens": st.one_of(st.integers(1, 3), JSON_VALUES),
    "temperature": st.one_of(st.just(0.0), JSON_VALUES),
    "stream": st.booleans(),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=10), JSON_VALUES),
    "gkt": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "guidance_tokens": st.one_of(st.integers(0, 3), JSON_VALUES),
                "mode": st.sampled_from(["gkt", "student", "teacher", "x"]),
                "guidance_policy": JSON_VALUES,
            },
        ),
        JSON_VALUES,
    ),
}


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A path and a body: mostly JSON objects with plausible and implausible fields, sometimes not JSON at all."""
    chat = draw(st.booleans())
    body: dict[str, object] = {}
    if draw(st.integers(0, 9)) > 0:
        body["messages" if chat else "prompt"] = draw(HTTP_MESSAGES if chat else st.one_of(TEXT, JSON_VALUES))
    for name, strategy in HTTP_FIELDS.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    raw = draw(st.one_of(st.just(json.dumps(body).encode()), st.binary(max_size=60)))
    return ("/v1/chat/completions" if chat else "/v1/completions"), raw


@pytest_asyncio.fixture(scope="module")
async def refusing_teacher_edge(tmp_path_factory: object) -> AsyncIterator[EdgeServer]:
    """An edge whose teacher's chat template refuses roles that do not alternate; breaker threshold 3."""
    folder = Path(str(tmp_path_factory.mktemp("template")))  # type: ignore[attr-defined]
    (folder / "alternating.jinja").write_text(ALTERNATING_TEMPLATE)
    async with running_teacher(prompt_format="chat", chat_template_file=folder / "alternating.jinja") as teacher:
        async with running_edge(teacher.port, breaker_failure_threshold=3, breaker_reset_seconds=600.0) as edge:
            edge.fuzz_teacher = teacher  # type: ignore[attr-defined]
            yield edge


async def test_fuzzed_requests_get_defined_statuses(refusing_teacher_edge: EdgeServer) -> None:
    edge_server = refusing_teacher_edge
    channel = grpc.insecure_channel(f"127.0.0.1:{edge_server.port}")
    stub = edge_pb2_grpc.EdgeServiceStub(channel)
    raw_unary = channel.unary_unary("/gkt.v1.EdgeService/Generate")
    raw_stream = channel.unary_stream("/gkt.v1.EdgeService/GenerateStream")
    seen: dict[str, int] = {}
    degraded: dict[str, int] = {}

    def record(code: grpc.StatusCode) -> None:
        assert code in DEFINED, f"undefined status {code}"
        seen[code.name] = seen.get(code.name, 0) + 1

    def note(response: object) -> None:
        if isinstance(response, edge_pb2.GenerateResponse) and response.degraded:
            name = edge_pb2.DegradedReason.Name(response.degraded_reason)
            degraded[name] = degraded.get(name, 0) + 1

    def call(fn, *args):  # type: ignore[no-untyped-def]
        try:
            result = fn(*args, timeout=60)
            if isinstance(result, edge_pb2.GenerateResponse):
                note(result)
            elif hasattr(result, "__iter__") and not isinstance(result, bytes):
                for chunk in result:
                    if isinstance(chunk, edge_pb2.GenerateStreamChunk) and chunk.HasField("final"):
                        note(chunk.final)
            record(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            record(error.code())

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(requests(), st.booleans())
    def typed(request: edge_pb2.GenerateRequest, streamed: bool) -> None:
        call(stub.GenerateStream if streamed else stub.Generate, request)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(
                [
                    b"\x0a\x02\xff\xfe",  # prompt with invalid UTF-8
                    b"\x12\x06\x0a\x04\x0a\x02\xc3\x28",  # a conversation whose message's role is invalid UTF-8
                    b"\x0a\x01x\x12\x06\x0a\x04\x0a\x02hi",  # a prompt, then a conversation (the last one wins)
                    b"\x0a\x01x\x0a\x01y",  # the prompt field twice (last one wins)
                    b"\x30\xff\xff\xff\xff\x0f",  # max_tokens = -1 as a varint
                    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
                ]
            ),
        ),
        st.booleans(),
    )
    def raw(payload: bytes, streamed: bool) -> None:
        call(raw_stream if streamed else raw_unary, payload)

    http_seen: dict[int, int] = {}

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(http_requests())
    def over_http(path_and_body: tuple[str, bytes]) -> None:
        path, body = path_and_body
        reply = httpx.post(
            f"http://127.0.0.1:{edge_server.http_port}{path}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert reply.status_code in {200, 400, 404, 413, 429}, (reply.status_code, reply.text[:300])
        if reply.status_code != 200:
            assert reply.json()["error"]["message"], reply.text[:300]
        elif reply.headers["content-type"].startswith("application/json"):
            gkt = reply.json()["gkt"]
            if gkt.get("degraded"):
                degraded[gkt["degraded_reason"]] = degraded.get(gkt["degraded_reason"], 0) + 1
        http_seen[reply.status_code] = http_seen.get(reply.status_code, 0) + 1

    # The sync clients block; run hypothesis in a thread while the servers keep running on this loop.
    await asyncio.to_thread(typed)
    await asyncio.to_thread(raw)
    await asyncio.to_thread(over_http)
    channel.close()
    assert sum(seen.values()) >= 400
    assert seen.get("INVALID_ARGUMENT", 0) > 100 and seen.get("OK", 0) >= 3, seen
    assert http_seen.get(400, 0) > 50 and http_seen.get(200, 0) >= 3, http_seen
    # Conversations the student takes and the teacher's template refuses, on both doors and in every policy: the
    # caller's doing, never counted against the teacher.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_server.port}") as aio_channel:
        aio_stub = edge_pb2_grpc.EdgeServiceStub(aio_channel)
        for roles in (["user", "user"], ["assistant", "user"], ["system", "user", "user"]):
            for kind in (edge_pb2.GuidancePolicy.KIND_FIXED, edge_pb2.GuidancePolicy.KIND_ADAPTIVE):
                messages = [common_pb2.ChatMessage(role=role, content="Hello there.") for role in roles]
                refused = edge_pb2.GenerateRequest(
                    conversation=common_pb2.Conversation(messages=messages),
                    guidance_tokens=2,
                    max_tokens=2,
                    guidance_policy=edge_pb2.GuidancePolicy(kind=kind, floor_tokens=1, escalate=True),
                )
                note(await aio_stub.Generate(refused))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge_server.http_port}") as http:
        for _ in range(3):
            reply = await http.post(
                "/v1/chat/completions",
                json={"model": "gkt@2", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi."}] * 2},
            )
            assert reply.status_code == 200, reply.text
            name = reply.json()["gkt"]["degraded_reason"]
            degraded[name] = degraded.get(name, 0) + 1
    teacher = edge_server.fuzz_teacher  # type: ignore[attr-defined]
    assert degraded.get("DEGRADED_REASON_ERROR", 0) >= 6 and degraded.get("error", 0) >= 3, degraded
    assert not {"DEGRADED_REASON_CIRCUIT_OPEN", "circuit_open"} & set(degraded), degraded
    assert edge_server.breaker.state == "closed"
    internal = [
        sample
        for metric in teacher.metrics.registry.collect()
        if metric.name == "gkt_request_errors"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("code") == "INTERNAL" and sample.value
    ]
    assert not internal, internal

    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_server.port}") as aio_channel:
        health = await health_pb2_grpc.HealthStub(aio_channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        response = await edge_pb2_grpc.EdgeServiceStub(aio_channel).Generate(
            edge_pb2.GenerateRequest(
                conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="Hello!")]),
                max_tokens=8,
            )
        )
    assert response.text and not response.degraded
