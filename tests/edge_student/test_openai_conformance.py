"""The OpenAI door as apps expect it, through the official `openai` client, over every model name the edge serves,
streamed and unary: `max_tokens` bounds the whole answer (guidance included, in the student's tokenizer, also for the
cross-tokenizer tiny pair: Gemma teacher, SmolLM2 student), usage adds up (the prompt once), a conversation ending
with an assistant message is answered, auth and request errors as OpenAI answers them. gRPC's side of `max_tokens`
and usage is here too, in every mode and policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import openai
import pytest
import pytest_asyncio

from cloud_teacher.server import TeacherServer
from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc, teacher_pb2, teacher_pb2_grpc
from tests.conftest import running_edge

QUESTION = "Explain in detail how plants turn sunlight into food."
MODELS = ("gkt", "gkt@6", "gkt-student", "gkt-teacher")  # gkt: the edge's default K (40)
# German text: the teacher's (Gemma) vocabulary covers it in far fewer tokens than the student's (SmolLM2), so K
# teacher tokens re-tokenise into more student tokens (21 Gemma tokens are 35 SmolLM2 tokens for one sentence).
GERMAN = "Die Photosynthese ist ein Prozess, bei dem"
STREAMED = (False, True)


@dataclass
class Reply:
    """One answer as the client saw it, unary or streamed."""

    text: str
    finish_reason: str | None
    usage: Any
    extension: dict[str, Any]


@pytest_asyncio.fixture
async def client(edge_server: EdgeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    base_url = f"http://127.0.0.1:{edge_server.http_port}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as api:
        yield api


def student_tokens(edge: EdgeServer, text: str) -> int:
    """`text` counted in the student's tokenizer, as the edge counts an answer."""
    assert edge.engine is not None
    return len(edge.engine.model.tokenize(text, add_special=False))


async def chat(client: openai.AsyncOpenAI, stream: bool, **body: Any) -> Reply:
    """A chat completion; streamed with `include_usage`, its chunks put back together."""
    if not stream:
        response = await client.chat.completions.create(**body)
        choice = response.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason, response.usage, response.model_extra["gkt"])
    chunks = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    text, reason, usage, extension = "", None, None, {}
    async for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                reason, extension = chunk.choices[0].finish_reason, chunk.model_extra["gkt"]
    return Reply(text, reason, usage, extension)


async def complete(client: openai.AsyncOpenAI, stream: bool, **body: Any) -> Reply:
    """A text completion, the same way."""
    if not stream:
        response = await client.completions.create(**body)
        choice = response.choices[0]
        return Reply(choice.text, choice.finish_reason, response.usage, response.model_extra["gkt"])
    chunks = await client.completions.create(**body, stream=True, stream_options={"include_usage": True})
    text, reason, usage, extension = "", None, None, {}
    async for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].text
            if chunk.choices[0].finish_reason:
                reason, extension = chunk.choices[0].finish_reason, chunk.model_extra["gkt"]
    return Reply(text, reason, usage, extension)


def user(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- max_tokens: the whole answer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("model", MODELS)
async def test_max_tokens_bounds_the_whole_answer(
    edge_server: EdgeServer, client: openai.AsyncOpenAI, model: str, stream: bool
) -> None:
    """`max_tokens`, `max_completion_tokens` and the completions door's `max_tokens`: at most 4 tokens of answer,
    guidance included, counted in the student's tokenizer, and a capped answer ends with "length"."""
    replies = [
        await chat(client, stream, model=model, messages=user(), max_tokens=4),
        await chat(client, stream, model=model, messages=user(), max_completion_tokens=4),
        await complete(client, stream, model=model, prompt=GERMAN, max_tokens=4),
    ]
    for reply in replies:
        assert reply.text
        assert reply.usage.completion_tokens <= 4, reply
        assert student_tokens(edge_server, reply.text) <= 4, reply.text
        assert reply.finish_reason == "length", reply
        if model.startswith("gkt@") or model == "gkt":
            assert reply.extension["guidance_tokens"] == 4, "K is clipped to max_tokens"


async def test_teacher_text_is_cut_in_the_students_tokens_for_a_cross_tokenizer_pair(
    edge_server: EdgeServer,
    teacher_stub: teacher_pb2_grpc.TeacherServiceStub,
    client: openai.AsyncOpenAI,
) -> None:
    """The tiny pair's teacher (Gemma, vocabulary 262k) writes 12 of its tokens that SmolLM2 (49k) reads as more:
    the teacher-only answer and the guidance are cut at 12 student tokens."""
    prompt = GERMAN
    direct = ""
    async for chunk in teacher_stub.StreamGuidance(teacher_pb2.GuidanceRequest(prompt=prompt, max_tokens=12)):
        direct += chunk.delta.text
    assert student_tokens(edge_server, direct) > 12, "the case needs teacher text longer in student tokens"
    for model in ("gkt-teacher", "gkt@12"):
        for stream in STREAMED:
            reply = await complete(client, stream, model=model, prompt=prompt, max_tokens=12)
            assert direct.startswith(reply.text) and reply.text, (model, reply.text, direct)
            assert student_tokens(edge_server, reply.text) == reply.usage.completion_tokens <= 12
            assert reply.finish_reason == "length"
            assert reply.extension["usage"]["teacher_completion_tokens"] <= 12
            assert reply.extension["student_text"] == ""


POLICIES = {
    "fixed": edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_FIXED),
    "adaptive": edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_ADAPTIVE, floor_tokens=2, window=2),
    "escalate": edge_pb2.GuidancePolicy(
        kind=edge_pb2.GuidancePolicy.KIND_FIXED, escalate=True, entropy_threshold=0.0, entropy_run=1, burst_tokens=4
    ),
}
GRPC_MODES = {"gkt": edge_pb2.MODE_GKT, "student": edge_pb2.MODE_STUDENT_ONLY, "teacher": edge_pb2.MODE_TEACHER_ONLY}


@pytest.mark.parametrize(
    ("mode", "policy", "k", "max_tokens"),
    [
        ("gkt", "fixed", 40, 4),
        ("gkt", "fixed", 4, 10),
        ("gkt", "adaptive", 40, 6),
        ("gkt", "escalate", 3, 12),
        ("student", "fixed", 0, 4),
        ("teacher", "fixed", 0, 4),
    ],
)
async def test_grpc_max_tokens_is_the_whole_answer_in_every_mode_and_policy(
    edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub, mode: str, policy: str, k: int, max_tokens: int
) -> None:
    request = edge_pb2.GenerateRequest(
        conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content=QUESTION)]),
        mode=GRPC_MODES[mode],
        guidance_tokens=k,
        max_tokens=max_tokens,
        guidance_policy=POLICIES[policy],
    )
    unary = await edge_stub.Generate(request)
    streamed = [chunk async for chunk in edge_stub.GenerateStream(request)]
    final = streamed[-1].final
    for response in (unary, final):
        assert student_tokens(edge_server, response.text) <= max_tokens, response.text
        assert 0 < response.usage.completion_tokens <= max_tokens
        assert response.finish_reason == common_pb2.FINISH_REASON_LENGTH
        assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert "".join(chunk.delta.text for chunk in streamed[:-1]) == final.text


# ---- usage: the prompt once, the answer with its guidance --------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("model", MODELS)
async def test_usage_counts_the_prompt_once_and_the_answer_with_its_guidance(
    edge_server: EdgeServer, client: openai.AsyncOpenAI, model: str, stream: bool
) -> None:
    alone = await chat(client, False, model="gkt-student", messages=user(), max_tokens=2)
    reply = await chat(client, stream, model=model, messages=user(), max_tokens=10)
    usage, tiers = reply.usage, reply.extension["usage"]
    assert usage.prompt_tokens == alone.usage.prompt_tokens, "the same prompt as a one-model answer, whatever K"
    assert (
        usage.completion_tokens
        == student_tokens(edge_server, reply.extension["guidance_text"]) + (tiers["student_completion_tokens"])
    )
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 <= usage.prompt_tokens_details.cached_tokens <= usage.prompt_tokens
    # The per-tier counts stay in the extension, as gRPC reports them (the teacher's in its own tokenizer).
    if model != "gkt-student":
        assert tiers["teacher_prompt_tokens"] > 0 and tiers["teacher_completion_tokens"] > 0


async def test_grpc_usage_has_the_whole_answer_beside_the_tiers(edge_stub: edge_pb2_grpc.EdgeServiceStub) -> None:
    def ask(mode: int, k: int = 0) -> edge_pb2.GenerateRequest:
        return edge_pb2.GenerateRequest(prompt=f"Q: {QUESTION}\nA:", mode=mode, guidance_tokens=k, max_tokens=8)  # type: ignore[arg-type]

    alone = (await edge_stub.Generate(ask(edge_pb2.MODE_STUDENT_ONLY))).usage
    assert (
        alone.prompt_tokens == alone.student_prompt_tokens
        and alone.completion_tokens == alone.student_completion_tokens
    )
    for request in (ask(edge_pb2.MODE_GKT, 4), ask(edge_pb2.MODE_GKT, 40), ask(edge_pb2.MODE_TEACHER_ONLY)):
        usage = (await edge_stub.Generate(request)).usage
        assert usage.prompt_tokens == alone.prompt_tokens
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and usage.completion_tokens <= 8
        assert usage.teacher_prompt_tokens > 0  # the per-tier counts, as before


# ---- a conversation ending with an assistant message --------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize("model", MODELS)
async def test_a_conversation_ending_with_an_assistant_message_is_answered(
    client: openai.AsyncOpenAI, model: str, stream: bool
) -> None:
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]
    reply = await chat(client, stream, model=model, messages=messages, max_tokens=6)
    assert reply.text and reply.finish_reason in ("stop", "length")


# ---- auth and request errors ---------------------------------------------------------------------------------------


async def test_missing_and_wrong_tokens_are_401_with_www_authenticate(teacher_server: TeacherServer) -> None:
    async with running_edge(teacher_server.port, auth_token="app-token-24-0123456789", n_slots=1) as edge:
        base = f"http://127.0.0.1:{edge.http_port}/v1"
        async with httpx.AsyncClient(base_url=base) as http:
            for headers in ({}, {"authorization": "Bearer guess"}):
                refused = await http.post("/chat/completions", json={"messages": user("hi")}, headers=headers)
                assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
                assert refused.json()["error"]["type"] == "authentication_error"
        async with openai.AsyncOpenAI(base_url=base, api_key="guess", max_retries=0) as wrong:
            for model in MODELS:
                for stream in STREAMED:
                    with pytest.raises(openai.AuthenticationError) as caught:
                        await chat(wrong, stream, model=model, messages=user("hi"), max_tokens=2)
                    assert caught.value.status_code == 401
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()


@pytest.mark.parametrize("model", MODELS)
async def test_stream_options_without_stream_is_refused_naming_it(client: openai.AsyncOpenAI, model: str) -> None:
    for create, body in (
        (client.chat.completions.create, {"messages": user("hi")}),
        (client.completions.create, {"prompt": "hi"}),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await create(model=model, max_tokens=2, stream=False, stream_options={"include_usage": True}, **body)  # type: ignore[operator]
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "stream_options"


@pytest.mark.parametrize("stream", STREAMED)
async def test_an_unknown_model_is_404_model_not_found(client: openai.AsyncOpenAI, stream: bool) -> None:
    for create, body in (
        (client.chat.completions.create, {"messages": user("hi")}),
        (client.completions.create, {"prompt": "hi"}),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            await create(model="gpt-4o", max_tokens=2, stream=stream, **body)  # type: ignore[operator]
        error = caught.value
        assert error.status_code == 404 and error.code == "model_not_found"
        assert isinstance(error.body, dict) and error.body["type"] == "invalid_request_error"
        assert error.body["param"] == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"


async def test_grpc_keeps_unauthenticated_and_permission_denied_apart(teacher_server: TeacherServer) -> None:
    async with running_edge(teacher_server.port, auth_token="app-token-24-0123456789", n_slots=1) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            request = edge_pb2.GenerateRequest(prompt="hi", mode=edge_pb2.MODE_STUDENT_ONLY, max_tokens=2)
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer guess"),), grpc.StatusCode.PERMISSION_DENIED),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Generate(request, metadata=metadata)
                assert caught.value.code() == code
