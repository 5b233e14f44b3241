"""`python -m shared.server.health_probe`: exit 0 only while a server's grpc.health.v1 check says SERVING (TLS too)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.server.security import channel_credentials
from shared.server.settings_base import SettingsError

DESCRIPTION = """Checks a GKT server's standard gRPC health, as a Kubernetes exec probe or a container HEALTHCHECK.
Kubernetes' own `grpc:` probes (and plaintext health checks) cannot speak TLS, so a server that serves TLS needs
this: with --tls-ca-file it connects over TLS and verifies the server's certificate for --tls-server-name.
Exit codes: 0 SERVING, 1 anything else (NOT_SERVING, unreachable, handshake failed), 2 bad arguments."""


def check(
    address: str,
    *,
    service: str = "",
    timeout: float = 4.0,
    ca_file: Path | None = None,
    server_name: str | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> str:
    """The health status name of `service` at `address` (e.g. "SERVING"); raises `grpc.RpcError` when unreachable."""
    if ca_file is None:
        channel = grpc.insecure_channel(address)
    else:
        # The probe connects to 127.0.0.1, but the certificate names the Service: verify that name instead.
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, channel_credentials(ca_file, cert_file, key_file), options)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.server.health_probe", description=DESCRIPTION)
    parser.add_argument("--port", type=int, required=True, help="the server's gRPC port")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default %(default)s)")
    parser.add_argument("--service", default="", help="the health service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer")
    parser.add_argument("--tls-ca-file", type=Path, help="connect over TLS, trusting this CA bundle (PEM)")
    parser.add_argument("--tls-server-name", help="the name the server's certificate must carry (default: --host)")
    parser.add_argument("--tls-cert-file", type=Path, help="client certificate (PEM), for a mutual-TLS server")
    parser.add_argument("--tls-key-file", type=Path, help="the client certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if args.tls_ca_file is None and (args.tls_server_name or args.tls_cert_file or args.tls_key_file):
        parser.error("--tls-server-name, --tls-cert-file and --tls-key-file need --tls-ca-file")
    try:
        status = check(
            f"{args.host}:{args.port}",
            service=args.service,
            timeout=args.timeout,
            ca_file=args.tls_ca_file,
            server_name=args.tls_server_name,
            cert_file=args.tls_cert_file,
            key_file=args.tls_key_file,
        )
    except SettingsError as error:
        sys.stderr.write(f"health probe: {error}\n")
        return 2
    except grpc.RpcError as error:
        sys.stderr.write(f"health probe: {error.code().name}: {error.details()}\n")
        return 1
    # Kubernetes keeps the probe's output in the pod's events: say what was seen.
    (sys.stdout if status == "SERVING" else sys.stderr).write(f"health probe: {status}\n")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
