"""TLS, mutual TLS between edge and cloud, and bearer tokens on both tiers; secrets stay out of logs and metrics."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_teacher.server import TeacherServer
from edge_student.server import EdgeServer
from shared.protocol.gkt.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from shared.server.security import accepted_tokens
from shared.server.settings_base import SettingsError
from tests.certs import CertFiles, CertificateAuthority
from tests.conftest import closed_port, edge_settings, running_edge, running_teacher, teacher_settings

APP_TOKEN = "app-secret-token-6f1c"
EDGE_TO_TEACHER_TOKEN = "edge-secret-token-93ab"
REQUEST = edge_pb2.GenerateRequest(
    conversation=common_pb2.Conversation(messages=[common_pb2.ChatMessage(role="user", content="What is a cloud?")]),
    guidance_tokens=4,
    max_tokens=6,
)


@dataclass
class Pki:
    ca: CertificateAuthority
    teacher: CertFiles
    edge_server: CertFiles
    edge_client: CertFiles
    stranger_client: CertFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    stranger_ca = CertificateAuthority(directory, "stranger-ca")
    return Pki(
        ca=ca,
        teacher=ca.issue("teacher", server=True),
        edge_server=ca.issue("edge", server=True),
        edge_client=ca.issue("edge-client", server=False),
        stranger_client=stranger_ca.issue("stranger", server=False),
    )


@pytest_asyncio.fixture(scope="module")
async def secure_teacher(pki: Pki) -> AsyncIterator[TeacherServer]:
    """A teacher that requires mutual TLS and a bearer token."""
    async with running_teacher(
        tls_cert_file=pki.teacher.cert,
        tls_key_file=pki.teacher.key,
        tls_client_ca_file=pki.ca.files.cert,
        auth_token=EDGE_TO_TEACHER_TOKEN,
    ) as teacher:
        yield teacher


def edge_security(pki: Pki, client: CertFiles | None = None, token: str = EDGE_TO_TEACHER_TOKEN) -> dict[str, object]:
    client = client or pki.edge_client
    return {
        "tls_cert_file": pki.edge_server.cert,
        "tls_key_file": pki.edge_server.key,
        "auth_token": APP_TOKEN,
        "teacher_tls": True,
        "teacher_tls_ca_file": pki.ca.files.cert,
        "teacher_tls_cert_file": client.cert,
        "teacher_tls_key_file": client.key,
        "teacher_auth_token": token,
        "guidance_first_token_timeout_seconds": 5.0,
    }


def app_channel(pki: Pki, port: int) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.files.cert.read_bytes())
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_tls_and_mtls_end_to_end(
    pki: Pki, secure_teacher: TeacherServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_edge(f"localhost:{secure_teacher.port}", **edge_security(pki)) as edge:
        async with app_channel(pki, edge.port) as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            response = await stub.Generate(REQUEST, metadata=bearer(APP_TOKEN))
            assert not response.degraded, response.degraded_reason
            assert response.guidance_text and response.student_text

            # Tokens: none -> UNAUTHENTICATED, a wrong one -> PERMISSION_DENIED.
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.Generate(REQUEST)
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await stub.Generate(REQUEST, metadata=bearer("guess"))
            assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED
            stream = stub.GenerateStream(REQUEST, metadata=bearer("guess"))
            with pytest.raises(grpc.aio.AioRpcError) as wrong_stream:
                async for _ in stream:
                    pass
            assert wrong_stream.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # Health stays reachable without a token (for probes), over TLS.
            status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert status.status == health_pb2.HealthCheckResponse.SERVING

        # A plain-text client cannot talk to the TLS edge.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await edge_pb2_grpc.EdgeServiceStub(plain).Generate(REQUEST, metadata=bearer(APP_TOKEN), timeout=5)
            assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE

        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{edge.grpc.metrics_port}/metrics")).text
        assert 'code="UNAUTHENTICATED"' in metrics and 'code="PERMISSION_DENIED"' in metrics
        for secret in (APP_TOKEN, EDGE_TO_TEACHER_TOKEN):
            assert secret not in metrics
            assert not any(secret in record.getMessage() for record in caplog.records), "a secret reached the logs"
        assert APP_TOKEN not in repr(edge.settings) and EDGE_TO_TEACHER_TOKEN not in repr(edge.settings)


async def test_edge_with_a_strangers_certificate_is_refused_by_the_teacher(
    pki: Pki, secure_teacher: TeacherServer
) -> None:
    async with running_edge(
        f"localhost:{secure_teacher.port}", **edge_security(pki, client=pki.stranger_client)
    ) as edge:
        async with app_channel(pki, edge.port) as channel:
            response = await edge_pb2_grpc.EdgeServiceStub(channel).Generate(REQUEST, metadata=bearer(APP_TOKEN))
    # The teacher's TLS handshake refuses the stranger: the edge answers alone, and says so.
    assert response.degraded and response.degraded_reason == edge_pb2.DEGRADED_REASON_UNAVAILABLE
    assert response.guidance_text == "" and response.student_text


async def test_edge_with_the_wrong_teacher_token_is_refused(pki: Pki, secure_teacher: TeacherServer) -> None:
    async with running_edge(
        f"localhost:{secure_teacher.port}", **edge_security(pki, token="not-the-teacher-token-at-all")
    ) as edge:
        async with app_channel(pki, edge.port) as channel:
            response = await edge_pb2_grpc.EdgeServiceStub(channel).Generate(REQUEST, metadata=bearer(APP_TOKEN))
    assert response.degraded and response.degraded_reason == edge_pb2.DEGRADED_REASON_UNAUTHORIZED
    assert response.student_text


async def test_token_file_and_health_exemption_switch(tmp_path: Path, teacher_server: TeacherServer) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# one per line\nfirst-token-3c0a7d19\n\nsecond-token-8e4b2f60\n")
    async with running_edge(teacher_server.port, auth_tokens_file=tokens, auth_exempt_health=False) as edge:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
            stub = edge_pb2_grpc.EdgeServiceStub(channel)
            for token in ("first-token-3c0a7d19", "second-token-8e4b2f60"):
                assert (await stub.Generate(REQUEST, metadata=bearer(token))).text
            with pytest.raises(grpc.aio.AioRpcError) as health:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.value.code() == grpc.StatusCode.UNAUTHENTICATED


PLACEHOLDER = "CHANGE-ME-to-a-long-random-token"


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (PLACEHOLDER, "example placeholder"),
        ("please-change-me-before-going-live", "example placeholder"),  # any case, anywhere in the token
        ("fifteen-chars-x", "15 characters; at least 16"),
    ],
)
def test_weak_accepted_tokens_stop_the_server_from_starting(token: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=rf"--auth-token \(GKT_TEACHER_AUTH_TOKEN\) .*{problem}") as refused:
        TeacherServer(teacher_settings(auth_token=token))
    assert token not in str(refused.value)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# accepted tokens\na-good-token-0f3e5d7c9b\n{token}\n")
    with pytest.raises(SettingsError, match=r"line 3 of --auth-tokens-file \(GKT_EDGE_AUTH_TOKENS_FILE\)"):
        EdgeServer(edge_settings(closed_port(), auth_tokens_file=tokens))


def test_a_weak_token_for_the_teacher_stops_the_edge(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"--teacher-auth-token \(GKT_EDGE_TEACHER_AUTH_TOKEN\) .*placeholder"):
        EdgeServer(edge_settings(closed_port(), teacher_auth_token=PLACEHOLDER))
    token_file = tmp_path / "teacher-token"
    token_file.write_text("short\n")
    with pytest.raises(SettingsError, match=r"--teacher-auth-token-file \(GKT_EDGE_TEACHER_AUTH_TOKEN_FILE\) .* 5 "):
        EdgeServer(edge_settings(closed_port(), teacher_auth_token_file=token_file))


def test_sixteen_characters_are_enough() -> None:
    assert accepted_tokens(teacher_settings(auth_token="0123456789abcdef")) == {"0123456789abcdef"}


def test_placeholder_certificates_stop_both_tiers(tmp_path: Path, pki: Pki) -> None:
    fake = tmp_path / "placeholder.pem"
    fake.write_text("-----BEGIN CERTIFICATE-----\nPLACEHOLDER\n-----END CERTIFICATE-----\n")
    with pytest.raises(SettingsError, match=r"--tls-cert-file \(GKT_TEACHER_TLS_CERT_FILE\).*not a readable PEM"):
        TeacherServer(teacher_settings(tls_cert_file=fake, tls_key_file=pki.teacher.key))
    with pytest.raises(SettingsError, match=r"TLS CA file: .*placeholder.pem is not a readable PEM CA"):
        EdgeServer(edge_settings(closed_port(), teacher_tls=True, teacher_tls_ca_file=fake))


async def test_openai_api_over_tls_and_mutual_tls(pki: Pki, teacher_server: TeacherServer) -> None:
    """The HTTP API takes the edge's TLS settings: its certificate, and a client certificate when a client CA is set."""
    security = {
        "tls_cert_file": pki.edge_server.cert,
        "tls_key_file": pki.edge_server.key,
        "tls_client_ca_file": pki.ca.files.cert,
        "auth_token": APP_TOKEN,
    }
    async with running_edge(teacher_server.port, **security) as edge:
        url = f"https://localhost:{edge.http_port}/v1"
        trusted = ssl.create_default_context(cafile=str(pki.ca.files.cert))
        trusted.load_cert_chain(pki.edge_client.cert, pki.edge_client.key)
        http_client = openai.DefaultAsyncHttpxClient(verify=trusted)
        async with openai.AsyncOpenAI(base_url=url, api_key=APP_TOKEN, max_retries=0, http_client=http_client) as app:
            response = await app.chat.completions.create(
                model="gkt-student", messages=[{"role": "user", "content": "What is a cloud?"}], max_tokens=3
            )
            assert response.choices[0].message.content

        # Without a client certificate the handshake is refused; plain HTTP gets nowhere either.
        anonymous = openai.DefaultAsyncHttpxClient(verify=ssl.create_default_context(cafile=str(pki.ca.files.cert)))
        async with openai.AsyncOpenAI(base_url=url, api_key=APP_TOKEN, max_retries=0, http_client=anonymous) as app:
            with pytest.raises(openai.APIConnectionError):
                await app.models.list()
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{edge.http_port}/health")
