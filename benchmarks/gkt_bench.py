"""`gkt bench`: the paper's GSM8K / CSQA experiments through the edge and cloud services, in every mode.

Each question is sent to the edge over gRPC as a raw few-shot prompt, once per mode: teacher-only, student-only
and GKT at each K, one mode after the other over all questions with the same concurrency, so that wall times
compare. Writes a results JSON, a per-answer JSONL file beside it and three PNG plots, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import grpc
from google.protobuf.json_format import MessageToDict

from benchmarks.checkpoint import Checkpoint, checkpoint_path
from benchmarks.datasets import DATASETS, DEFAULT_FILES, Dataset, DatasetError, Example, load_examples
from benchmarks.prompts import (
    CSQA_ANSWER_PHRASE,
    GSM8K_ANSWER_PHRASE,
    STOP_SEQUENCES,
    FewShotPrompts,
    few_shot_prompts,
)
from benchmarks.report import (
    build_results,
    markdown_table,
    policy_comparison,
    policy_table,
    write_answers,
    write_json,
    write_plots,
)
from benchmarks.runner import FIXED, MODE_NAMES, ModeRun, ModeSpec, PolicySpec, RequestSettings, run_mode
from edge_student.settings import EdgeSettings
from shared.catalog import DEFAULT_STUDENT, cache_dir
from shared.hardware import hardware_summary
from shared.launch import ServiceProcess, launch_edge, launch_teacher
from shared.pricing import Prices
from shared.protocol.domain import ModeName
from shared.protocol.gkt.v1 import common_pb2, edge_pb2_grpc

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results"
# The paper's settings: GSM8K K=40 then up to 300 student tokens; CSQA K=30 then 100. The edge's max_tokens is the
# whole answer (guidance included, in the student's tokenizer), the same budget for every mode: K + the paper's rest.
PAPER_GUIDANCE_TOKENS: dict[Dataset, int] = {"gsm8k": 40, "csqa": 30}
PAPER_MAX_TOKENS: dict[Dataset, int] = {"gsm8k": 340, "csqa": 130}
TeacherBackend = Literal["vllm", "llamacpp"]
# Launched services wait this long for guidance before answering degraded: a long teacher-only answer behind a
# queue of others must not be cut off by the edge's interactive deadlines (10 s / 30 s by default).
LAUNCHED_GUIDANCE_TIMEOUT_SECONDS = 1800.0


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. `edge` set: use the running services there; unset: start a teacher and one edge per
    student, and stop them at the end."""

    dataset: Dataset = "csqa"
    data: Path | None = None
    limit: int | None = None
    guidance_tokens: tuple[int, ...] = ()  # empty: the paper's K for the dataset
    max_tokens: int | None = None  # None: the paper's budget for the dataset
    modes: tuple[ModeName, ...] = MODE_NAMES
    concurrency: int = 4
    seed: int | None = 0
    temperature: float = 0.0
    edge: str | None = None
    teacher_backend: TeacherBackend = "vllm"
    teacher_model: str | None = None  # launched teacher's --model (None: its default)
    students: tuple[str, ...] = ()  # launched edges' --model, one edge each (empty: the edge's default)
    policies: tuple[PolicySpec, ...] = (FIXED,)  # guidance policies GKT runs with, at each K
    out: Path | None = None  # None: nothing written
    plots_dir: Path | None = None  # None: beside `out`
    timeout_seconds: float = 1800.0
    progress: bool = True
    resume: bool = False  # reuse rows an interrupted run of the same questions, settings and models recorded
    warm_up: bool = True  # one untimed request through both tiers before the first measured mode

    def resolved(self) -> BenchConfig:
        """The same with the dataset's defaults filled in."""
        return replace(
            self,
            guidance_tokens=self.guidance_tokens or (PAPER_GUIDANCE_TOKENS[self.dataset],),
            max_tokens=self.max_tokens or PAPER_MAX_TOKENS[self.dataset],
            students=() if self.edge is not None else (self.students or (DEFAULT_STUDENT,)),
        )

    def student_labels(self) -> list[str | None]:
        """How rows name their student: not at all with one student, by its model with several."""
        return list(self.students) if len(self.students) > 1 else [None]

    def mode_specs(self) -> list[ModeSpec]:
        """Teacher-only first (the reference), then per student: student-only, then GKT at each K, ascending, per
        policy. Policies other than `fixed` run with the first student only (they are compared on one pair)."""
        specs = [ModeSpec("teacher")] if "teacher" in self.modes else []
        for index, student in enumerate(self.student_labels()):
            if "student" in self.modes:
                specs.append(ModeSpec("student", student=student))
            if "gkt" in self.modes:
                for policy in self.policies:
                    if index > 0 and policy.name != "fixed":
                        continue
                    ks = (
                        sorted(set(self.guidance_tokens))
                        if policy.guidance_tokens is None
                        else [policy.guidance_tokens]
                    )
                    specs += [ModeSpec("gkt", k, student, policy) for k in ks]
        return specs


@contextlib.asynccontextmanager
async def edge_services(config: BenchConfig) -> AsyncIterator[dict[str | None, str]]:
    """Edge addresses by student label: the running edge at `config.edge`, or a teacher and one edge per student
    started here on free ports (stopped on exit; their logs go to `<cache>/run/bench-*.log`)."""
    if config.edge is not None:
        yield {None: config.edge}
        return
    run_dir = cache_dir() / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    slots = max(1, min(64, config.concurrency))
    started: list[ServiceProcess] = []
    try:
        teacher_log = run_dir / "bench-teacher.log"
        teacher_args = ["--n-slots", str(slots), "--log-level", "WARNING"]
        if config.teacher_model:
            teacher_args += ["--model", config.teacher_model]
        teacher = launch_teacher(config.teacher_backend, teacher_args, log_path=teacher_log)
        started.append(teacher)
        await _wait_ready(teacher, 1800, teacher_log)
        timeout = str(LAUNCHED_GUIDANCE_TIMEOUT_SECONDS)
        addresses: dict[str | None, str] = {}
        for label, student in zip(config.student_labels(), config.students, strict=True):
            log = run_dir / f"bench-edge-{student}.log"
            edge = launch_edge(
                f"127.0.0.1:{teacher.port}",
                [
                    *("--model", student, "--n-slots", str(slots), "--max-queue", str(max(64, config.concurrency))),
                    *("--log-level", "WARNING", "--guidance-first-token-timeout-seconds", timeout),
                    *("--guidance-timeout-seconds", timeout, "--teacher-only-timeout-seconds", timeout),
                ],
                log_path=log,
            )
            started.append(edge)
            await _wait_ready(edge, 600, log)
            addresses[label] = f"127.0.0.1:{edge.port}"
        yield addresses
    finally:
        for process in reversed(started):
            await asyncio.to_thread(process.stop)


async def _wait_ready(service: ServiceProcess, seconds: float, log: Path) -> None:
    try:
        await asyncio.to_thread(service.wait_ready, seconds)
    except (RuntimeError, TimeoutError) as error:
        raise RuntimeError(f"{error} (its log: {log})") from None


def describe(info: common_pb2.ServerInfo) -> str:
    """One line naming what a server ran: model, file, engine, dtype, threads, slots, hardware."""
    parts = [f"{info.model} ({Path(info.model_file).name or info.model_file})", f"on {info.backend}"]
    if info.dtype:
        parts.append(info.dtype)
    parts.append(f"{info.threads} thread(s)" if info.threads else "engine-chosen threads (vLLM: one worker core)")
    parts.append(f"{info.slots} slots")
    return ", ".join(parts) + f"; {info.hardware}"


async def servers_info(addresses: dict[str | None, str]) -> dict[str, Any]:
    """What each edge and the teacher report they run (`GetInfo`), for the results document."""
    edges: dict[str, Any] = {}
    teacher: common_pb2.ServerInfo | None = None
    for label, address in addresses.items():
        async with grpc.aio.insecure_channel(address) as channel:
            info = await edge_pb2_grpc.EdgeServiceStub(channel).GetInfo(common_pb2.GetInfoRequest(), timeout=30)
        edges[label or ""] = info.edge
        if info.HasField("teacher"):
            teacher = info.teacher
    return {
        "teacher": describe(teacher) if teacher is not None else "unknown (the edge could not reach its teacher)",
        "students": {label: describe(info) for label, info in edges.items()},
        "servers": {
            "teacher": MessageToDict(teacher, preserving_proto_field_name=True) if teacher is not None else None,
            "edges": {label: MessageToDict(info, preserving_proto_field_name=True) for label, info in edges.items()},
        },
    }


def metadata(config: BenchConfig, prices: Prices, n: int, shots: int, edges: dict[str | None, str]) -> dict[str, Any]:
    """The top of the results JSON: what was run, on what, with which prices."""
    return {
        "benchmark": "gkt bench",
        "dataset": config.dataset,
        "data_file": str(config.data or DEFAULT_FILES[config.dataset]),
        "n": n,
        "limit": config.limit,
        "shots": shots,
        "answer_phrase": GSM8K_ANSWER_PHRASE if config.dataset == "gsm8k" else CSQA_ANSWER_PHRASE,
        "modes": [spec.key for spec in config.mode_specs()],
        "guidance_tokens": list(config.guidance_tokens),
        "guidance_policies": {
            p.name: MessageToDict(p.policy, preserving_proto_field_name=True) for p in config.policies
        },
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "seed": config.seed,
        "stop": list(STOP_SEQUENCES),
        "concurrency": config.concurrency,
        "services": {
            "launched_by_bench": config.edge is None,
            "edge_addresses": {label or "": address for label, address in edges.items()},
        },
        "prices_per_1k_tokens": asdict(prices),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "hardware": hardware_summary(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


async def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Runs every mode over the dataset and returns the results document (also written to `config.out`)."""
    config = config.resolved()
    prompts, examples = await asyncio.to_thread(load_questions, config)
    if not examples:
        raise DatasetError("no questions to run (empty file, or --limit 0)")
    settings = RequestSettings(
        max_tokens=config.max_tokens or PAPER_MAX_TOKENS[config.dataset],
        temperature=config.temperature,
        seed=config.seed,
        stop=STOP_SEQUENCES,
        timeout_seconds=config.timeout_seconds,
    )
    runs: list[ModeRun] = []
    async with edge_services(config) as addresses, contextlib.AsyncExitStack() as stack:
        stubs = {
            label: edge_pb2_grpc.EdgeServiceStub(await stack.enter_async_context(grpc.aio.insecure_channel(address)))
            for label, address in addresses.items()
        }
        models = await servers_info(addresses)
        fingerprint = run_fingerprint(config, settings, examples, models)
        if config.warm_up:  # so that the first measured mode pays no connection set-up, on every edge
            for stub in stubs.values():
                await run_mode(
                    stub,
                    ModeSpec("gkt", 1),
                    examples[:1],
                    dataset=config.dataset,
                    prompts=prompts,
                    settings=replace(settings, max_tokens=1),
                    concurrency=1,
                    progress=False,
                )
        first = next(iter(stubs.values()))
        checkpoint = Checkpoint(checkpoint_path(config.out) if config.out else None, fingerprint)
        recorded = checkpoint.load() if config.resume else {}
        if not config.resume:
            checkpoint.discard()
        resumed: list[str] = []
        for spec in config.mode_specs():
            earlier = checkpoint.resumed(spec, recorded)
            if earlier is not None:
                logger.info("%s: %d answers recorded by the interrupted run, not run again", spec.key, len(examples))
                runs.append(earlier)
                resumed.append(spec.key)
                continue
            run = await run_mode(
                stubs[spec.student] if spec.mode != "teacher" else first,
                spec,
                examples,
                dataset=config.dataset,
                prompts=prompts,
                settings=settings,
                concurrency=config.concurrency,
                progress=config.progress,
            )
            checkpoint.save(run)
            runs.append(run)
    prices = EdgeSettings().prices()  # the edge's price settings (GKT_EDGE_*_PRICE_*), as its cost metrics use
    document = metadata(config, prices, len(examples), len(prompts.exemplars), addresses)
    document["models"] = models
    # Rows measured by an earlier, interrupted process: their speeds come from other engine instances.
    document["resumed_modes"] = resumed
    document["prompt_prefix_chars"] = len(prompts.prefix)
    document["results"] = build_results(runs, prices)
    document["policy_comparison"] = policy_comparison(document["results"])
    if config.out is not None:
        await asyncio.to_thread(write_outputs, document, runs, config.out, config.plots_dir)
    checkpoint.discard()
    return document


def run_fingerprint(
    config: BenchConfig, settings: RequestSettings, examples: Sequence[Example], models: dict[str, Any]
) -> dict[str, Any]:
    """What must be the same for a recorded row to be reused: the questions, the request settings, each policy and
    the models (with the hardware and threads they ran on)."""
    return {
        "dataset": config.dataset,
        "questions": [example.id for example in examples],
        "settings": asdict(settings),
        "concurrency": config.concurrency,
        "policies": {p.name: MessageToDict(p.policy, preserving_proto_field_name=True) for p in config.policies},
        "teacher": models["teacher"],
        "students": models["students"],
    }


def load_questions(config: BenchConfig) -> tuple[FewShotPrompts, list[Example]]:
    """The dataset's few-shot prompts and its evaluation questions (the exemplars left out)."""
    prompts = few_shot_prompts(config.dataset)
    examples = load_examples(config.dataset, config.data, exclude=prompts.exemplar_questions(), limit=config.limit)
    return prompts, examples


def write_outputs(document: dict[str, Any], runs: Sequence[ModeRun], out: Path, plots_dir: Path | None) -> None:
    """The plots (`<out stem>_*.png`, beside `out` unless `plots_dir`), the per-answer JSONL (`<out
    stem>.answers.jsonl`) and the results JSON, which lists the other files under `files`."""
    answers = out.with_suffix(".answers.jsonl")
    plots = write_plots(document, plots_dir or out.parent, out.stem)
    document["files"] = {"answers": str(answers), "plots": [str(p) for p in plots]}
    write_answers(answers, runs)
    write_json(out, document)


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _modes(text: str) -> tuple[ModeName, ...]:
    modes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [m for m in modes if m not in MODE_NAMES]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"modes are {','.join(MODE_NAMES)}; got {text!r}")
    return cast(tuple[ModeName, ...], modes)


def _policy(text: str) -> PolicySpec:
    try:
        return PolicySpec.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated model names, got {text!r}")
    return names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gkt bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=DATASETS, default="csqa", help="default %(default)s")
    p.add_argument("--data", type=Path, help="a JSONL file in the dataset's layout (default: the bundled dev file)")
    p.add_argument("--limit", type=_positive_int, help="the first N questions only (default: all)")
    p.add_argument(
        "--guidance-tokens",
        type=_positive_ints,
        default=(),
        metavar="K1,K2,...",
        help="K values for GKT mode (default: the paper's, 40 for gsm8k, 30 for csqa)",
    )
    p.add_argument(
        "--max-tokens",
        type=_positive_int,
        help="tokens of the whole answer, guidance included, for every mode (default: 340 gsm8k, 130 csqa)",
    )
    p.add_argument(
        "--modes", type=_modes, default=MODE_NAMES, metavar="M1,M2", help="of teacher,student,gkt (default: all)"
    )
    p.add_argument("--concurrency", type=_positive_int, default=4, help="requests in flight (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed sent with every request (default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default %(default)s)")
    p.add_argument("--edge", metavar="HOST:PORT", help="use the edge running there (default: start teacher + edge)")
    p.add_argument(
        "--teacher-backend",
        choices=["vllm", "llamacpp"],
        default="vllm",
        help="teacher engine when the bench starts the services (default %(default)s)",
    )
    p.add_argument("--teacher-model", help="the launched teacher's --model (default: its default, a catalog name)")
    p.add_argument(
        "--students",
        type=_names,
        default=(),
        metavar="M1,M2",
        help="student models (catalog names or GGUF paths), one launched edge each, compared in one run "
        "(default: the edge's default student)",
    )
    p.add_argument(
        "--guidance-policy",
        "--policy",
        dest="policies",
        action="append",
        type=_policy,
        metavar="[NAME=]fixed|adaptive[:OPTIONS]",
        help="a guidance policy GKT runs with at each K (repeat for several; default: fixed; policies other than "
        "fixed run with the first student only). OPTIONS: floor=N, "
        "window=N, top1=F, logprob=F, escalate, entropy=F, run=N, bursts=N, burst=N; e.g. "
        "--guidance-policy a4=adaptive:floor=8,window=4 --guidance-policy fixed",
    )
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/<dataset>.json)")
    p.add_argument("--plots-dir", type=Path, help="where the PNG plots go (default: beside --out)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per request (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the rows an interrupted run recorded in <out stem>.progress.jsonl (same questions, settings "
        "and models) and run only the rest; without it that file is started afresh",
    )
    return p


def config_from_args(argv: Sequence[str]) -> BenchConfig:
    args = parser().parse_args(argv)
    return BenchConfig(
        dataset=args.dataset,
        data=args.data,
        limit=args.limit,
        guidance_tokens=args.guidance_tokens,
        max_tokens=args.max_tokens,
        modes=args.modes,
        concurrency=args.concurrency,
        seed=args.seed,
        temperature=args.temperature,
        edge=args.edge,
        teacher_backend=args.teacher_backend,
        teacher_model=args.teacher_model,
        students=args.students,
        policies=tuple(args.policies or (FIXED,)),
        out=args.out or RESULTS_DIR / f"{args.dataset}.json",
        plots_dir=args.plots_dir,
        timeout_seconds=args.timeout,
        progress=not args.no_progress,
        resume=args.resume,
    )


def bench_main(argv: Sequence[str]) -> int:
    """`gkt bench ARGS`: 0 when every mode got answers, 1 when the run failed or a mode got none."""
    config = config_from_args(argv)
    try:
        document = asyncio.run(run_benchmark(config))
    except (DatasetError, RuntimeError, TimeoutError, OSError) as error:
        sys.stderr.write(f"gkt bench: {error}\n")
        return 1
    out = sys.stdout
    out.write("\n" + markdown_table(document) + "\n")
    if table := policy_table(document):
        out.write(table + "\n")
    failed = {key: row["failed"] for key, row in document["results"].items() if row["failed"]}
    if failed:
        out.write(f"RPC failures (counted as wrong): {failed}; see the answers file for the errors\n")
    out.write(f"wrote {config.out}\n")
    for path in [document["files"]["answers"], *document["files"]["plots"]]:
        out.write(f"wrote {path}\n")
    return 1 if any(row["failed"] == row["n"] for row in document["results"].values()) else 0
