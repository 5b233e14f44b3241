"""The edge's OpenAI-compatible HTTP API on the real edge and teacher, through the official `openai` client: the same
answers as gRPC, model-name routing and the `gkt` extension, assistant prefill, errors with their HTTP statuses (the
gRPC bad-input list among them), a full queue, deadlines, shutdown, and dropped clients freeing their slots."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cloud_teacher.server import TeacherServer
from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import counter_total, edge_settings, running_edge, wait_until
from tests.edge_student.test_bad_input import BAD_REQUESTS

QUESTION = "Explain in detail how plants turn sunlight into food."
# A raw prompt the student keeps continuing (no early end of text): it holds its slot for a while.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
# Per-tier counts that do not depend on what the prefix caches held from earlier requests.
USAGE_FIELDS = (
    "teacher_prompt_tokens",
    "teacher_completion_tokens",
    "student_prompt_tokens",
    "student_completion_tokens",
    "student_guidance_tokens",
)


def client_for(edge: EdgeServer, api_key: str = "no-token-needed", **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{edge.http_port}/v1", api_key=api_key, max_retries=0, timeout=120, **options
    )


@pytest_asyncio.fixture
async def client(edge_server: EdgeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(edge_server) as api:
        yield api


def gkt(response: Any) -> dict[str, Any]:
    """The `gkt` extension of a response or chunk (the official client keeps unknown fields as extras)."""
    extension: dict[str, Any] = response.model_extra["gkt"]
    return extension


def user(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def conversation(*messages: tuple[str, str]) -> common_pb2.Conversation:
    return common_pb2.Conversation(messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages])


def assert_same_answer(extension: dict[str, Any], expected: edge_pb2.GenerateResponse) -> None:
    """The HTTP answer's `gkt` extension says what the gRPC response says (text, and the per-tier token counts)."""
    assert extension["guidance_text"] == expected.guidance_text
    assert extension["student_text"] == expected.student_text
    assert extension["degraded"] is expected.degraded is False
    for name in USAGE_FIELDS:
        assert extension["usage"][name] == getattr(expected.usage, name), name


def assert_usage_adds_up(usage: Any, extension: dict[str, Any]) -> None:
    """OpenAI's usage is the whole answer's (the prompt once, guidance in the answer), as gRPC's whole-answer
    fields report it."""
    tiers = extension["usage"]
    assert (
        usage.prompt_tokens
        == tiers["prompt_tokens"]
        == tiers["student_prompt_tokens"] - tiers["student_guidance_tokens"]
    )
    assert usage.completion_tokens == tiers["completion_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def teacher_calls(teacher: TeacherServer) -> float:
    """Guidance requests the teacher has finished (successes and errors)."""
    return counter_total(teacher.metrics.registry, "gkt_request_success", "gkt_request_errors")


def errors(registry: CollectorRegistry, code: str, **labels: str) -> float:
    """`gkt_request_errors_total` with this code (and labels), summed."""
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "gkt_request_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels["code"] == code
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def samples(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def all_slots_free(edge: EdgeServer) -> bool:
    assert edge.engine is not None
    stats = edge.engine.stats()
    return stats.free_slots == stats.n_slots and stats.waiting == 0


# ---- the same answers as gRPC ----------------------------------------------------------------------------------


async def test_chat_unary_and_streamed_match_grpc(
    edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub, client: openai.AsyncOpenAI
) -> None:
    expected = await edge_stub.Generate(
        edge_pb2.GenerateRequest(
            conversation=conversation(("user", QUESTION)),
            guidance_tokens=8,
            max_tokens=16,
            sampling=common_pb2.Sampling(seed=7),
        )
    )
    assert expected.guidance_text and expected.student_text
    registry = edge_server.metrics.registry
    answered = samples(registry, "gkt_request_success_total", api="openai", mode="gkt")
    timed = samples(registry, "gkt_e2e_request_latency_seconds_count", api="openai", mode="gkt")

    unary = await client.chat.completions.create(model="gkt@8", messages=user(), max_tokens=16, seed=7)
    assert unary.object == "chat.completion" and unary.model == "gkt@8"
    assert unary.choices[0].message.role == "assistant"
    assert unary.choices[0].message.content == expected.text
    assert unary.choices[0].finish_reason == "length"
    assert gkt(unary)["mode"] == "gkt" and gkt(unary)["guidance_tokens"] == 8
    assert_same_answer(gkt(unary), expected)
    assert unary.usage is not None
    assert_usage_adds_up(unary.usage, gkt(unary))
    assert gkt(unary)["timings"]["total_seconds"] > 0

    stream = await client.chat.completions.create(
        model="gkt@8", messages=user(), max_tokens=16, seed=7, stream=True, stream_options={"include_usage": True}
    )
    pieces: dict[str, list[str]] = {"guidance": [], "student": []}
    roles, finished, usage = [], [], None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            assert not chunk.choices
            usage = chunk.usage
            continue
        choice = chunk.choices[0]
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            pieces[gkt(chunk)["segment"]].append(choice.delta.content)
        if choice.finish_reason:
            finished.append((choice.finish_reason, gkt(chunk)))
    assert roles == ["assistant"]
    assert "".join(pieces["guidance"] + pieces["student"]) == unary.choices[0].message.content
    assert "".join(pieces["guidance"]) == expected.guidance_text
    [(reason, extension)] = finished
    assert reason == "length"
    assert_same_answer(extension, expected)
    assert usage is not None
    assert_usage_adds_up(usage, extension)
    assert (usage.prompt_tokens, usage.completion_tokens) == (unary.usage.prompt_tokens, unary.usage.completion_tokens)

    # Counted like gRPC's answers, with api="openai".
    assert samples(registry, "gkt_request_success_total", api="openai", mode="gkt") == answered + 2
    assert samples(registry, "gkt_e2e_request_latency_seconds_count", api="openai", mode="gkt") == timed + 2


async def test_completion_unary_and_streamed_match_grpc(
    edge_stub: edge_pb2_grpc.EdgeServiceStub, client: openai.AsyncOpenAI
) -> None:
    prompt = "Q: Why do leaves change colour in autumn?\nA:"
    expected = await edge_stub.Generate(
        edge_pb2.GenerateRequest(
            prompt=prompt,
            guidance_tokens=6,
            max_tokens=14,
            sampling=common_pb2.Sampling(seed=3, stop=["\nQ:"]),
        )
    )
    options = {"model": "gkt", "prompt": prompt, "max_tokens": 14, "seed": 3, "stop": "\nQ:"}
    unary = await client.completions.create(**options, extra_body={"gkt": {"guidance_tokens": 6}})
    assert unary.object == "text_completion"
    assert unary.choices[0].text == expected.text
    assert_same_answer(gkt(unary), expected)
    assert unary.usage is not None
    assert_usage_adds_up(unary.usage, gkt(unary))

    stream = await client.completions.create(
        **options, stream=True, stream_options={"include_usage": True}, extra_body={"gkt": {"guidance_tokens": 6}}
    )
    texts, extensions, usage = [], [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            texts.append(chunk.choices[0].text)
            if chunk.choices[0].finish_reason:
                extensions.append(gkt(chunk))
    assert "".join(texts) == unary.choices[0].text
    [extension] = extensions
    assert_same_answer(extension, expected)
    assert usage is not None and usage.total_tokens == unary.usage.total_tokens


# ---- routing: the model name and the `gkt` extension ----------------------------------------------------------


async def test_student_model_makes_no_teacher_call(teacher_server: TeacherServer, client: openai.AsyncOpenAI) -> None:
    before = teacher_calls(teacher_server)
    unary = await client.chat.completions.create(model="gkt-student", messages=user(), max_tokens=8)
    stream = await client.chat.completions.create(model="gkt-student", messages=user(), max_tokens=8, stream=True)
    streamed = [chunk async for chunk in stream]
    assert gkt(unary)["mode"] == "student_only"
    assert gkt(unary)["guidance_text"] == "" and unary.choices[0].message.content
    assert gkt(unary)["usage"]["teacher_prompt_tokens"] == gkt(unary)["usage"]["teacher_completion_tokens"] == 0
    assert all(gkt(c)["segment"] == "student" for c in streamed if c.choices and c.choices[0].delta.content)
    assert teacher_calls(teacher_server) == before


async def test_gkt_at_k_caps_the_teacher_tokens(client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(model="gkt@5", messages=user(), max_tokens=12)
    clipped = await client.chat.completions.create(model="gkt@5", messages=user(), max_tokens=3)
    assert gkt(clipped)["guidance_tokens"] == 3, "K is clipped to max_tokens"
    extension = gkt(response)
    assert extension["mode"] == "gkt" and extension["guidance_tokens"] == 5
    assert 0 < extension["usage"]["teacher_completion_tokens"] <= 5
    assert extension["guidance_text"] and response.choices[0].message.content.startswith(extension["guidance_text"])


async def test_the_gkt_extension_overrides_the_model_name(client: openai.AsyncOpenAI) -> None:
    fewer = await client.chat.completions.create(
        model="gkt@5", messages=user(), max_tokens=8, extra_body={"gkt": {"guidance_tokens": 2}}
    )
    assert gkt(fewer)["guidance_tokens"] == 2
    assert 0 < gkt(fewer)["usage"]["teacher_completion_tokens"] <= 2

    guided = await client.chat.completions.create(
        model="gkt-student", messages=user(), max_tokens=8, extra_body={"gkt": {"mode": "gkt", "guidance_tokens": 3}}
    )
    assert gkt(guided)["mode"] == "gkt" and 0 < gkt(guided)["usage"]["teacher_completion_tokens"] <= 3

    teacher = await client.chat.completions.create(
        model="gkt", messages=user(), max_tokens=6, extra_body={"gkt": {"mode": "teacher"}}
    )
    assert gkt(teacher)["mode"] == "teacher_only"
    assert gkt(teacher)["student_text"] == "" and gkt(teacher)["usage"]["student_completion_tokens"] == 0
    assert teacher.choices[0].message.content == gkt(teacher)["guidance_text"] != ""


async def test_models_and_health(edge_server: EdgeServer, client: openai.AsyncOpenAI) -> None:
    models = {model.id: gkt(model) for model in (await client.models.list()).data}
    assert set(models) == {"gkt", "gkt-student", "gkt-teacher"}
    assert models["gkt"]["guidance_tokens"] == edge_server.settings.default_guidance_tokens
    assert models["gkt-student"]["mode"] == "student_only" and models["gkt-teacher"]["mode"] == "teacher_only"
    assert gkt(await client.models.retrieve("gkt@7"))["guidance_tokens"] == 7
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4o")
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{edge_server.http_port}/health")
    assert health.status_code == 200 and health.json() == {"status": "SERVING"}


# ---- assistant prefill ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode", "k"), [("gkt-student", edge_pb2.MODE_STUDENT_ONLY, 0), ("gkt@4", 0, 4)])
async def test_continue_final_message_continues_the_assistant_text(
    edge_stub: edge_pb2_grpc.EdgeServiceStub, client: openai.AsyncOpenAI, model: str, mode: int, k: int
) -> None:
    started = "Plants make their food in the leaves. First,"
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": started}]
    response = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, extra_body={"continue_final_message": True}
    )
    expected = await edge_stub.Generate(
        edge_pb2.GenerateRequest(
            conversation=conversation(("user", QUESTION), ("assistant", started)),
            continue_final_message=True,
            mode=mode,  # type: ignore[arg-type]
            guidance_tokens=k,
            max_tokens=12,
        )
    )
    continuation = response.choices[0].message.content
    assert continuation == expected.text and continuation.strip()
    assert not continuation.lstrip().startswith(started), "the answer is what comes after the prefill"
    fresh = await client.chat.completions.create(model=model, messages=user(), max_tokens=12)
    assert fresh.choices[0].message.content != continuation, "the prefill changed nothing"

    # Without the flag, a new assistant turn answers the conversation (as OpenAI and vLLM do): not the continuation.
    answered = await client.chat.completions.create(model=model, messages=messages, max_tokens=12)
    assert answered.choices[0].message.content != continuation


# ---- errors ------------------------------------------------------------------------------------------------------

MODE_WORDS = {edge_pb2.MODE_GKT: "gkt", edge_pb2.MODE_STUDENT_ONLY: "student", edge_pb2.MODE_TEACHER_ONLY: "teacher"}


def as_openai(request: edge_pb2.GenerateRequest) -> tuple[str, dict[str, Any]]:
    """A gRPC request as the same request to the OpenAI API: (endpoint, body)."""
    body: dict[str, Any] = {"model": "gkt"}
    if request.WhichOneof("input") == "conversation":
        endpoint = "chat"
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.conversation.messages]
    else:
        endpoint = "completions"
        body["prompt"] = request.prompt
    options: dict[str, Any] = {}
    if request.HasField("max_tokens"):
        body["max_tokens"] = request.max_tokens
    if request.HasField("guidance_tokens"):
        options["guidance_tokens"] = request.guidance_tokens
    if request.mode:
        options["mode"] = MODE_WORDS.get(request.mode, f"mode-{request.mode}")
    sampling = request.sampling
    for name in ("temperature", "top_p", "seed"):
        if sampling.HasField(name):
            body[name] = getattr(sampling, name)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if options:
        body["gkt"] = options
    return endpoint, body


def wire_field(field: str, endpoint: str) -> str:
    """The domain's field name as the OpenAI request spells it."""
    renames = {"mode": "gkt.mode", "guidance_tokens": "gkt.guidance_tokens"}
    if endpoint == "chat":
        renames["prompt"] = "messages"
    return renames.get(field, field)


async def send(client: openai.AsyncOpenAI, endpoint: str, body: dict[str, Any], *, stream: bool) -> None:
    """Sends the request with the official client (its JSON has no NaN: that one goes through httpx)."""
    fields = dict(body)
    if any(isinstance(v, float) and math.isnan(v) for v in fields.values()):
        path = "/chat/completions" if endpoint == "chat" else "/completions"
        async with httpx.AsyncClient(base_url=str(client.base_url)) as http:
            response = await http.post(
                path.lstrip("/"),
                content=json.dumps({**fields, "stream": stream}),  # Python's json writes NaN; Starlette reads it
                headers={"content-type": "application/json"},
            )
        raise openai.BadRequestError(response.text, response=response, body=response.json()["error"])  # type: ignore[arg-type]
    extra = {"gkt": fields.pop("gkt")} if "gkt" in fields else None
    create = client.chat.completions.create if endpoint == "chat" else client.completions.create
    result = await create(**fields, stream=stream, extra_body=extra)
    if stream:
        async for _ in result:
            pass


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_grpc_bad_inputs_are_400s_naming_the_field(client: openai.AsyncOpenAI, name: str) -> None:
    request, field = BAD_REQUESTS[name]
    endpoint, body = as_openai(request)
    expected = wire_field(field, endpoint)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await send(client, endpoint, body, stream=stream)
        error = caught.value
        assert error.status_code == 400
        assert isinstance(error.body, dict) and error.body["type"] == "invalid_request_error"
        assert error.body["param"] == expected, error.body
        assert error.body["message"].startswith(f"{expected}:"), error.body


HTTP_BAD_REQUESTS = {
    "n above one": ({"n": 2}, "n", 400),
    "logprobs": ({"logprobs": True}, "logprobs", 400),
    "unknown model": ({"model": "gpt-4o"}, "model", 404),
    "stream_options without stream": ({"stream_options": {"include_usage": True}}, "stream_options", 400),
    "K of the model name above the limit": ({"model": "gkt@100000"}, "model", 400),
    "K of the extension above the limit": (
        {"extra_body": {"gkt": {"guidance_tokens": 100000}}},
        "gkt.guidance_tokens",
        400,
    ),
    "misspelt extension option": ({"extra_body": {"gkt": {"guidance": 3}}}, "gkt.guidance", 400),
    "max_completion_tokens zero": ({"max_completion_tokens": 0}, "max_completion_tokens", 400),
    "stop string empty": ({"stop": ""}, "stop", 400),
    "temperature as a string": ({"extra_body": {"temperature": "hot"}}, "temperature", 400),
    "a non-text content part": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0]",
        400,
    ),
    "timeout not positive": ({"extra_body": {"gkt": {"timeout_seconds": 0}}}, "gkt.timeout_seconds", 400),
}


@pytest.mark.parametrize("name", list(HTTP_BAD_REQUESTS))
async def test_http_bad_inputs_name_the_field(client: openai.AsyncOpenAI, name: str) -> None:
    changes, field, status = HTTP_BAD_REQUESTS[name]
    request: dict[str, Any] = {"model": "gkt", "messages": user("hi"), "max_tokens": 4, **changes}
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(**request)
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == field, caught.value.body


async def test_edge_keeps_serving_after_bad_inputs(edge_server: EdgeServer, client: openai.AsyncOpenAI) -> None:
    for request, _ in BAD_REQUESTS.values():
        endpoint, body = as_openai(request)
        with pytest.raises(openai.BadRequestError):
            await send(client, endpoint, body, stream=False)
    response = await client.chat.completions.create(model="gkt-student", messages=user("hi"), max_tokens=4)
    assert response.choices[0].message.content
    assert errors(edge_server.metrics.registry, "INVALID_ARGUMENT", api="openai") >= len(BAD_REQUESTS)
    assert all_slots_free(edge_server)


async def test_bearer_tokens_as_on_grpc(teacher_server: TeacherServer) -> None:
    async with running_edge(teacher_server.port, auth_token="app-token-7-0123456789", n_slots=1) as edge:
        base = f"http://127.0.0.1:{edge.http_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            missing = await http.post("/v1/chat/completions", json={"messages": user("hi")})
            assert missing.status_code == 401
            assert missing.json()["error"]["type"] == "authentication_error"
            assert (await http.get("/health")).status_code == 200  # probes need no token, as on gRPC
        async with client_for(edge, api_key="guess") as wrong:  # 401 as OpenAI answers (gRPC: PERMISSION_DENIED)
            with pytest.raises(openai.AuthenticationError):
                await wrong.chat.completions.create(model="gkt-student", messages=user("hi"), max_tokens=2)
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()
        async with client_for(edge, api_key="app-token-7-0123456789") as right:
            response = await right.chat.completions.create(model="gkt-student", messages=user("hi"), max_tokens=2)
            assert response.choices[0].message.content
        registry = edge.metrics.registry
        assert errors(registry, "UNAUTHENTICATED", api="openai", method="/v1/chat/completions") == 2
        assert errors(registry, "UNAUTHENTICATED", api="openai") == 3


async def test_full_queue_is_429_and_the_edge_keeps_serving(teacher_server: TeacherServer) -> None:
    async with running_edge(teacher_server.port, n_slots=1, max_queue=0) as edge:
        async with client_for(edge) as client:
            holder = await client.completions.create(model="gkt-student", prompt=COUNTING, max_tokens=400, stream=True)
            chunks = aiter(holder)
            assert (await anext(chunks)).choices[0].text  # the one slot is busy writing
            for stream in (False, True):
                with pytest.raises(openai.RateLimitError) as caught:
                    await send(client, "chat", {"model": "gkt-student", "messages": user("hi")}, stream=stream)
                assert caught.value.code == "resource_exhausted"
            await holder.close()
            await wait_until(lambda: all_slots_free(edge))
            response = await client.chat.completions.create(model="gkt-student", messages=user("hi"), max_tokens=3)
            assert response.choices[0].message.content
        assert errors(edge.metrics.registry, "RESOURCE_EXHAUSTED", api="openai") == 2


# ---- clients that go away, deadlines, readiness and shutdown ------------------------------------------------------


async def test_dropped_stream_frees_the_slot_and_aborts_the_teacher(
    edge_server: EdgeServer, teacher_server: TeacherServer, client: openai.AsyncOpenAI
) -> None:
    teacher_cancelled = errors(teacher_server.metrics.registry, "CANCELLED")
    edge_cancelled = errors(edge_server.metrics.registry, "CANCELLED", api="openai")
    stream = await client.completions.create(model="gkt@300", prompt=COUNTING, max_tokens=400, stream=True)
    chunks = aiter(stream)
    for _ in range(3):
        assert gkt(await anext(chunks))["segment"] == "guidance"  # the teacher is still writing
    await stream.close()  # the client goes away mid-stream
    await wait_until(lambda: all_slots_free(edge_server))
    await wait_until(lambda: errors(teacher_server.metrics.registry, "CANCELLED") > teacher_cancelled)
    assert errors(edge_server.metrics.registry, "CANCELLED", api="openai") == edge_cancelled + 1


async def test_dropped_unary_request_frees_the_slot(edge_server: EdgeServer) -> None:
    async with httpx.AsyncClient(timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            await http.post(
                f"http://127.0.0.1:{edge_server.http_port}/v1/completions",
                json={"model": "gkt-student", "prompt": COUNTING, "max_tokens": 400},
            )
    await wait_until(lambda: all_slots_free(edge_server))


async def test_request_timeout_is_504(edge_server: EdgeServer, client: openai.AsyncOpenAI) -> None:
    slow = {"model": "gkt-student", "prompt": COUNTING, "max_tokens": 400}
    for stream in (False, True):  # the deadline passes before the answer (or its first token): 504
        with pytest.raises(openai.InternalServerError) as caught:
            await send(
                client, "completions", {**slow, "gkt": {"timeout_seconds": 0.3 if not stream else 0.001}}, stream=stream
            )
        assert caught.value.status_code == 504 and caught.value.code == "deadline_exceeded"
    # Past the first token the response has started: the deadline ends the stream with an error event.
    # (2 s: the first token arrives well within it even on a busy machine; 400 tokens of counting do not.)
    stream = await client.completions.create(**slow, stream=True, extra_body={"gkt": {"timeout_seconds": 2.0}})
    texts = []
    with pytest.raises(openai.APIError) as ended:
        async for chunk in stream:
            texts.append(chunk.choices[0].text)
    assert texts and ended.value.code == "deadline_exceeded"
    await wait_until(lambda: all_slots_free(edge_server))


async def test_not_ready_until_the_model_is_loaded(teacher_server: TeacherServer) -> None:
    edge = EdgeServer(edge_settings(teacher_server.port))
    await edge.listen()  # ports open, model not loaded
    try:
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{edge.http_port}/health")
        assert health.status_code == 503
        async with client_for(edge) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model="gkt", messages=user("hi"))
        assert caught.value.status_code == 503 and caught.value.code == "unavailable"
    finally:
        await edge.stop(grace=0)


async def test_shutdown_refuses_new_requests_and_finishes_accepted_ones(teacher_server: TeacherServer) -> None:
    edge = EdgeServer(edge_settings(teacher_server.port, n_slots=2))
    await edge.start()
    stopping: asyncio.Task[None] | None = None
    try:
        async with client_for(edge) as client:
            accepted = await client.completions.create(model="gkt-student", prompt=COUNTING, max_tokens=40, stream=True)
            chunks = aiter(accepted)
            texts = [(await anext(chunks)).choices[0].text]
            stopping = asyncio.create_task(edge.stop(grace=30))
            await wait_until(lambda: not edge.grpc.serving)
            try:
                await client.chat.completions.create(model="gkt-student", messages=user("hi"), max_tokens=2)
            except openai.InternalServerError as refused:
                assert refused.status_code == 503
            except openai.APIConnectionError:
                pass  # the listener is already closed
            else:
                raise AssertionError("a request was accepted after shutdown began")
            finals = []
            async for chunk in chunks:
                texts.append(chunk.choices[0].text)
                if chunk.choices[0].finish_reason:
                    finals.append(chunk.choices[0].finish_reason)
            assert finals == ["length"], "the accepted request finished"
            assert gkt(chunk)["student_text"] == "".join(texts)
        await stopping
    finally:
        if stopping is None:
            await edge.stop(grace=0)
