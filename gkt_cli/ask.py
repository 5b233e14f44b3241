"""`gkt ask`: one question to the edge, printed with the teacher's part highlighted and the usage per tier."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from edge_student.client import EdgeClient
from shared.protocol.convert import degraded_reason_name, finish_reason_name, guidance_end_name, mode_name_from_pb
from shared.protocol.domain import MODES_BY_NAME
from shared.protocol.gkt.v1 import edge_pb2
from shared.server.secrets import read_secret

# The variable the edge reads for the token it accepts: a user who set it for the server can call it as is.
TOKEN_ENV = "GKT_EDGE_AUTH_TOKEN"
TOKEN_WARNING = (
    "gkt ask: warning: --token puts the secret on the command line, where other users of this machine can read it "
    f"in the process list and it stays in your shell history; use --token-file PATH or the {TOKEN_ENV} "
    "environment variable instead\n"
)
TOKEN_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: f"the edge requires a bearer token: set {TOKEN_ENV} or pass --token-file PATH",
    grpc.StatusCode.PERMISSION_DENIED: "the edge does not accept the bearer token that was sent",
}


def response_to_json(response: edge_pb2.GenerateResponse) -> dict[str, Any]:
    """The response as plain JSON (snake_case keys, every field present, enums as lower-case words)."""
    data = MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    data["mode"] = mode_name_from_pb(response.mode)
    data["finish_reason"] = finish_reason_name(response.finish_reason)
    data["degraded_reason"] = degraded_reason_name(response.degraded_reason)
    data["guidance_end"] = guidance_end_name(response.guidance_end)
    return data


def _print_human(response: edge_pb2.GenerateResponse) -> None:
    u, t = response.usage, response.timings
    out = sys.stdout
    out.write(f"\033[1;36m{response.guidance_text}\033[0m{response.student_text}\n\n")
    out.write("(teacher-written part in cyan)\n" if response.guidance_text else "")
    if response.degraded:
        reason = degraded_reason_name(response.degraded_reason)
        out.write(f"DEGRADED: the teacher could not help ({reason}); the student answered alone\n")
    out.write(
        f"teacher: {u.teacher_prompt_tokens} prompt + {u.teacher_completion_tokens} generated tokens, "
        f"first token {t.teacher_time_to_first_token_seconds:.3f}s, total {t.teacher_total_seconds:.3f}s\n"
        f"student: {u.student_prompt_tokens} prompt (incl. {u.student_guidance_tokens} guidance) + "
        f"{u.student_completion_tokens} generated tokens, prefill {t.student_prefill_seconds:.3f}s, "
        f"decode {t.student_decode_seconds:.3f}s\n"
        f"edge: first token {t.time_to_first_token_seconds:.3f}s, total {t.total_seconds:.3f}s\n"
    )
    if response.HasField("verification"):
        v = response.verification
        out.write(
            f"verify: {v.rounds} rounds, {v.accepted_tokens}/{v.draft_tokens} draft tokens accepted, "
            f"{v.corrected_tokens} corrected, teacher scored {v.teacher_scored_tokens} tokens in {v.teacher_passes} "
            "passes\n"
        )


_KINDS = {
    "fixed": edge_pb2.GuidancePolicy.KIND_FIXED,
    "adaptive": edge_pb2.GuidancePolicy.KIND_ADAPTIVE,
    "verify": edge_pb2.GuidancePolicy.KIND_VERIFY,
}
_ACCEPTANCE = {
    "strict": edge_pb2.GuidancePolicy.ACCEPTANCE_STRICT,
    "min_teacher_prob": edge_pb2.GuidancePolicy.ACCEPTANCE_MIN_TEACHER_PROB,
    "speculative": edge_pb2.GuidancePolicy.ACCEPTANCE_SPECULATIVE,
}


def guidance_policy(args: argparse.Namespace) -> edge_pb2.GuidancePolicy | None:
    """The request's policy from the flags; None when no flag sets one (the edge's default)."""
    values = {
        "draft_tokens": args.draft_tokens,
        "min_teacher_prob": args.min_teacher_prob,
        "draft_min_prob": args.draft_min_prob,
        "correction_tokens": args.correction_tokens,
    }
    chosen: dict[str, Any] = {name: value for name, value in values.items() if value is not None}
    if args.acceptance:
        chosen["acceptance"] = _ACCEPTANCE[args.acceptance]
    if not (args.guidance or args.escalate or chosen):
        return None
    kind = _KINDS[args.guidance] if args.guidance else edge_pb2.GuidancePolicy.KIND_UNSPECIFIED
    return edge_pb2.GuidancePolicy(kind=kind, escalate=args.escalate, **chosen)


def bearer_token(token_file: Path | None, token: str | None) -> str | None:
    """The token to send: --token-file, else the deprecated --token (with a warning), else $GKT_EDGE_AUTH_TOKEN."""
    if token is not None:
        sys.stderr.write(TOKEN_WARNING)
    if token_file is not None:
        try:
            from_file = read_secret(None, token_file)
        except OSError as error:
            raise ValueError(f"--token-file: cannot read {token_file}: {error.strerror}") from error
        if not from_file:
            raise ValueError(f"--token-file: the first line of {token_file} is empty")
        return from_file
    return token if token is not None else os.environ.get(TOKEN_ENV) or None


def ask_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gkt ask",
        description="Ask the edge service one question.",
        epilog=(
            "An edge that requires a bearer token: the token is read from --token-file PATH (its first line), else "
            f"from the deprecated --token, else from the {TOKEN_ENV} environment variable (the one the edge itself "
            "reads for the token it accepts)."
        ),
    )
    parser.add_argument("question")
    parser.add_argument("--edge", default="127.0.0.1:50052", help="edge address host:port (default %(default)s)")
    parser.add_argument("--mode", choices=list(MODES_BY_NAME), default="gkt")
    parser.add_argument("--guidance-tokens", type=int, help="K: teacher tokens of guidance (edge default if unset)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        help="most tokens of the whole answer, guidance included, in the student's tokenizer (edge default if unset)",
    )
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--system-prompt", default="")
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file whose first line is the bearer token (safe; without it, ${TOKEN_ENV} is used)",
    )
    parser.add_argument(
        "--token",
        help="DEPRECATED, unsafe: the token shows in the process list and shell history; use --token-file or "
        f"${TOKEN_ENV}",
    )
    parser.add_argument(
        "--guidance",
        choices=["fixed", "adaptive", "verify"],
        help="guidance policy: fixed reads K teacher tokens; adaptive stops once the student agrees; verify: the "
        "teacher checks the student's drafts after K tokens (K may be 0) (edge default)",
    )
    parser.add_argument("--draft-tokens", type=int, help="verify: student tokens per draft (edge default if unset)")
    parser.add_argument(
        "--acceptance",
        choices=["strict", "min_teacher_prob", "speculative"],
        help="verify: which draft tokens the teacher keeps (edge default if unset)",
    )
    parser.add_argument("--min-teacher-prob", type=float, help="verify, min_teacher_prob: the least probability")
    parser.add_argument("--draft-min-prob", type=float, help="verify: end a draft where the student is less sure")
    parser.add_argument("--correction-tokens", type=int, help="verify: teacher tokens per correction")
    parser.add_argument("--escalate", action="store_true", help="let an unsure student ask the teacher for bursts")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {
        key: value
        for key, value in {
            "guidance_tokens": args.guidance_tokens,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "seed": args.seed,
        }.items()
        if value is not None
    }
    try:
        token = bearer_token(args.token_file, args.token)
    except ValueError as error:
        sys.stderr.write(f"gkt ask: {error}\n")
        return 2
    policy = guidance_policy(args)
    if policy is not None:
        settings["guidance_policy"] = policy
    client = EdgeClient(args.edge, token=token)
    try:
        response = client.ask(
            args.question, mode=args.mode, timeout=args.timeout, system_prompt=args.system_prompt, **settings
        )
    except grpc.RpcError as error:
        sys.stderr.write(f"gkt ask: {error.code().name}: {error.details()}\n")
        if error.code() in TOKEN_HINTS:
            sys.stderr.write(f"gkt ask: {TOKEN_HINTS[error.code()]}\n")
        return 1
    finally:
        client.close()
    if args.json:
        sys.stdout.write(json.dumps(response_to_json(response), indent=2) + "\n")
    else:
        _print_human(response)
    return 0
