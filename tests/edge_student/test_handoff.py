"""The hand-off from the teacher's guidance to the student (real student, scripted teacher: the guidance's exact
text and the teacher's final chunk are the subject)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import running_edge
from tests.fake_teachers import ScriptedTeacher, start_fake_teacher

FEW_SHOT = "Q: Name a colour.\nA: Red.\nQ: Name a fruit.\nA: Apple.\nQ: Name an animal.\nA:"


async def ask(deltas: Sequence[str], request: edge_pb2.GenerateRequest, **teacher: object) -> edge_pb2.GenerateResponse:
    server, port = await start_fake_teacher(ScriptedTeacher(deltas, **teacher))  # type: ignore[arg-type]
    try:
        async with running_edge(port) as edge:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                return await edge_pb2_grpc.EdgeServiceStub(channel).Generate(request, timeout=60)
    finally:
        await server.stop(0)


async def test_a_stop_sequence_spanning_the_hand_off_ends_the_answer() -> None:
    """The guidance ends the line ("\\n"), the student starts the next question ("Q:"): together they are the stop
    sequence "\\nQ:", which must end the answer although neither side holds all of it."""
    request = edge_pb2.GenerateRequest(
        prompt=FEW_SHOT, guidance_tokens=2, max_tokens=24, sampling=common_pb2.Sampling(temperature=0.0, stop=["\nQ:"])
    )
    response = await ask([" Dog.", "\n"], request)
    assert response.guidance_text == " Dog.\n"
    assert response.student_text == "", f"the student went on past the stop sequence: {response.student_text!r}"
    assert response.finish_reason == common_pb2.FINISH_REASON_STOP
    # Without the stop sequence the same student does start the next question: the case above is real.
    request.sampling.ClearField("stop")
    assert (await ask([" Dog.", "\n"], request)).student_text.startswith("Q:")


async def test_a_teacher_that_leaves_the_finish_reason_unset_has_not_finished_the_answer() -> None:
    """FINISH_REASON_UNSPECIFIED is not STOP: the student goes on from the guidance."""
    request = edge_pb2.GenerateRequest(prompt=FEW_SHOT, guidance_tokens=1, max_tokens=8)
    response = await ask([" Dog."], request, finish_reason=common_pb2.FINISH_REASON_UNSPECIFIED)
    assert response.guidance_text == " Dog." and response.student_text, "the answer was cut after the guidance"
