"""Prometheus metrics on both tiers: names, labels and counts agree with the responses; a real Prometheus scrapes
them and every PromQL expression of the Grafana dashboard returns data."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from cloud_teacher.server import TeacherServer
from edge_student.accounting import teacher_only_cost
from edge_student.server import EdgeServer
from shared.protocol.domain import Answer, Timings, Usage
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from tests.conftest import closed_port

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "gkt-serving.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# Over this test's own traffic (its Prometheus starts with it): the session's edge has answered other tests' requests
# before, verify answers among them, which on the tiny llama.cpp teacher cost more than teacher-only.
COST_RATIO = (
    'sum(increase(gkt_cost_total{tier="edge",mode="gkt"}[1m]))'
    ' / sum(increase(gkt_teacher_only_cost_total{mode="gkt"}[1m]))'
)


async def scrape(port: int | None) -> Samples:
    assert port is not None, "the server has no metrics port"
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (n, label_set), value in samples.items() if n == name and wanted <= label_set)


def label_sets(samples: Samples, name: str) -> set[frozenset[str]]:
    return {frozenset(k for k, _ in label_set) for n, label_set in samples if n == name}


async def run_mixed_requests(stub: edge_pb2_grpc.EdgeServiceStub) -> list[edge_pb2.GenerateResponse]:
    modes = [edge_pb2.MODE_GKT] * 3 + [edge_pb2.MODE_STUDENT_ONLY] * 2 + [edge_pb2.MODE_TEACHER_ONLY] * 2
    questions = [
        "What is rain?",
        "Why do cats purr?",
        "How do magnets work?",
        "What is a verb?",
        "Why is ice slippery?",
        "What is a comet?",
        "How do bees fly?",
    ]
    return [
        await stub.Generate(
            edge_pb2.GenerateRequest(
                conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content=q)]),
                mode=mode,
                guidance_tokens=6,
                max_tokens=12,
            )
        )
        for q, mode in zip(questions, modes, strict=True)
    ]


def usage_only(response: edge_pb2.GenerateResponse) -> Answer:
    """The response's usage in an `Answer` (all the teacher-only counterfactual reads)."""
    usage = Usage(**{f.name: getattr(response.usage, f.name) for f in dataclasses.fields(Usage)})
    return Answer(response.guidance_text, response.student_text, "gkt", "stop", usage, Timings())


async def test_metrics_agree_with_responses(
    teacher_server: TeacherServer, edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub
) -> None:
    edge_before = await scrape(edge_server.grpc.metrics_port)
    teacher_before = await scrape(teacher_server.grpc.metrics_port)
    responses = await run_mixed_requests(edge_stub)
    edge_after = await scrape(edge_server.grpc.metrics_port)
    teacher_after = await scrape(teacher_server.grpc.metrics_port)

    def edge_delta(name: str, **labels: str) -> float:
        return total(edge_after, name, **labels) - total(edge_before, name, **labels)

    def teacher_delta(name: str, **labels: str) -> float:
        return total(teacher_after, name, **labels) - total(teacher_before, name, **labels)

    usage = [r.usage for r in responses]
    assert edge_delta("gkt_generation_tokens_total", tier="edge") == sum(u.student_completion_tokens for u in usage)
    assert edge_delta("gkt_prompt_tokens_total", tier="edge") == sum(u.student_prompt_tokens for u in usage)
    assert edge_delta("gkt_guidance_tokens_total", tier="edge") == sum(u.teacher_completion_tokens for u in usage)
    assert teacher_delta("gkt_generation_tokens_total", tier="teacher") == sum(
        u.teacher_completion_tokens for u in usage
    )
    assert teacher_delta("gkt_prompt_tokens_total", tier="teacher") == sum(u.teacher_prompt_tokens for u in usage)
    for mode, count in (("gkt", 3), ("student_only", 2), ("teacher_only", 2)):
        assert edge_delta("gkt_request_success_total", tier="edge", api="grpc", mode=mode) == count
        assert edge_delta("gkt_e2e_request_latency_seconds_count", tier="edge", api="grpc", mode=mode) == count
    # The teacher learns the edge's mode from request metadata.
    assert teacher_delta("gkt_request_success_total", tier="teacher", mode="gkt") == 3
    assert teacher_delta("gkt_request_success_total", tier="teacher", mode="student_only") == 0
    assert edge_delta("gkt_time_to_first_token_seconds_sum", tier="edge") == pytest.approx(
        sum(r.timings.time_to_first_token_seconds for r in responses), rel=1e-6
    )
    assert edge_delta("gkt_guidance_wait_seconds_count", tier="edge") == 5

    expected_labels = {
        "gkt_time_to_first_token_seconds_bucket": {"tier", "api", "mode", "le"},
        "gkt_e2e_request_latency_seconds_bucket": {"tier", "api", "mode", "le"},
        "gkt_inter_token_latency_seconds_bucket": {"tier", "api", "mode", "le"},
        "gkt_request_queue_time_seconds_bucket": {"tier", "le"},
        "gkt_request_prefill_time_seconds_bucket": {"tier", "le"},
        "gkt_request_decode_time_seconds_bucket": {"tier", "le"},
        "gkt_guidance_wait_seconds_bucket": {"tier", "le"},
        "gkt_prompt_tokens_total": {"tier", "mode"},
        "gkt_generation_tokens_total": {"tier", "mode"},
        "gkt_guidance_tokens_total": {"tier", "mode"},
        "gkt_cost_total": {"tier", "component", "mode"},
        "gkt_teacher_only_cost_total": {"tier", "mode"},
        "gkt_request_success_total": {"tier", "api", "mode", "finished_reason"},
        "gkt_num_requests_running": {"tier"},
        "gkt_num_requests_waiting": {"tier"},
        "gkt_slots": {"tier"},
        "gkt_slots_used": {"tier"},
        "gkt_batch_size_bucket": {"tier", "le"},
    }
    for name, labels in expected_labels.items():
        assert label_sets(edge_after, name) == {frozenset(labels)}, name
    assert total(edge_after, "gkt_slots", tier="edge") == edge_server.settings.n_slots
    for name in ("gkt_generation_tokens_total", "gkt_cost_total", "gkt_e2e_request_latency_seconds_bucket"):
        assert {dict(k).get("tier") for n, k in teacher_after if n == name} == {"teacher"}
    assert not any(":" in name for name, _ in edge_after), "Prometheus names must not contain colons"


async def test_cost_ratio_in_metrics_matches_the_responses(
    edge_server: EdgeServer, edge_stub: edge_pb2_grpc.EdgeServiceStub
) -> None:
    before = await scrape(edge_server.grpc.metrics_port)
    responses = [r for r in await run_mixed_requests(edge_stub) if r.mode == edge_pb2.MODE_GKT]
    after = await scrape(edge_server.grpc.metrics_port)
    prices = edge_server.settings.prices()
    spent = sum(
        prices.teacher.cost(
            r.usage.teacher_prompt_tokens, r.usage.teacher_completion_tokens, r.usage.teacher_cached_prompt_tokens
        )
        + prices.student.cost(
            r.usage.student_prompt_tokens, r.usage.student_completion_tokens, r.usage.student_cached_prompt_tokens
        )
        for r in responses
    )
    counterfactual = sum(teacher_only_cost(usage_only(r), prices) for r in responses)

    def delta(name: str) -> float:
        return total(after, name, tier="edge", mode="gkt") - total(before, name, tier="edge", mode="gkt")

    metric_ratio = delta("gkt_cost_total") / delta("gkt_teacher_only_cost_total")
    assert metric_ratio == pytest.approx(spent / counterfactual, rel=1e-9)
    assert 0 < metric_ratio < 1, "GKT should cost less than the teacher writing whole answers"


# ---- a real Prometheus server and the Grafana dashboard ------------------------------------------------------


def dashboard_expressions() -> list[str]:
    """Every PromQL `expr` of every panel (rows included), with Grafana's interval variables filled in."""
    expressions: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str) and node["expr"].strip():
                expressions.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()).get("panels", []))
    substitutions = {
        r"\$__rate_interval": "1m",
        r"\$__interval": "15s",
        r"\$__range": "5m",
        r"\$\{?tier\}?": ".*",
        r"\$\{?job\}?": ".*",
        r"\$\{?instance\}?": ".*",
    }
    result = []
    for expression in expressions:
        for pattern, value in substitutions.items():
            expression = re.sub(pattern, value, expression)
        result.append(expression)
    return result


@pytest_asyncio.fixture
async def prometheus(teacher_server: TeacherServer, edge_server: EdgeServer, tmp_path: Path) -> AsyncIterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "the Prometheus server is missing: apt-get install prometheus (make test does it)"
    port = closed_port()
    config = tmp_path / "prometheus.yml"
    jobs = {"gkt-teacher": teacher_server.grpc.metrics_port, "gkt-edge": edge_server.grpc.metrics_port}
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
        + "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            for job, port in jobs.items()
        )
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    targets = (await client.get(f"{url}/api/v1/targets")).json()["data"]["activeTargets"]
                    if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                        break
                except (httpx.TransportError, KeyError, ValueError):
                    pass
                await asyncio.sleep(0.3)
            else:
                raise AssertionError("Prometheus did not scrape both tiers")
        yield url
    finally:
        process.terminate()
        await process.wait()


async def test_real_prometheus_evaluates_every_dashboard_query(
    prometheus: str, edge_stub: edge_pb2_grpc.EdgeServiceStub, teacher_server: TeacherServer
) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 10, "the dashboard should have a query per panel"
    await asyncio.sleep(1.5)  # a first scrape before the traffic, so rate() sees the counters rise
    await run_mixed_requests(edge_stub)
    with pytest.raises(Exception, match="max_tokens"):  # an error, so the error panels have a series too
        await edge_stub.Generate(edge_pb2.GenerateRequest(prompt="x", max_tokens=0))
    await asyncio.sleep(3)
    async with httpx.AsyncClient(base_url=prometheus) as client:
        ratio = (await client.get("/api/v1/query", params={"query": COST_RATIO})).json()["data"]["result"]
        assert 0 < float(ratio[0]["value"][1]) < 1
        # Then a verify answer, so its panels have a series too. Not before the ratio: with a llama.cpp teacher
        # that reports no cache hits, re-reading the answer so far each round costs more than teacher-only here.
        verify = edge_pb2.GuidancePolicy(kind=edge_pb2.GuidancePolicy.KIND_VERIFY, draft_tokens=4)
        checked = await edge_stub.Generate(
            edge_pb2.GenerateRequest(
                prompt="Q: What is rain?\nA:", guidance_tokens=0, max_tokens=12, guidance_policy=verify
            )
        )
        assert checked.verification.rounds >= 1
        await asyncio.sleep(3)
        for expression in expressions:
            body = (await client.get("/api/v1/query", params={"query": expression})).json()
            assert body["status"] == "success", f"{expression}: {body.get('error')}"
            assert body["data"]["result"], f"no data for dashboard query: {expression}"
