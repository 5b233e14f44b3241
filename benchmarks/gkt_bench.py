"""`gkt bench`: the paper's GSM8K / CSQA experiments through the edge and cloud services, in every mode.

Each question is sent to the edge over gRPC, as a raw few-shot prompt or as a zero-shot chat message
(`--workload`), once per mode: teacher-only, student-only and GKT at each K, one mode after the other over all
questions with the same concurrency, so that wall times compare. When the bench starts the services, each mode
starts from the same cache state: services restarted and warmed on a question that is not evaluated. Writes a
results JSON, a per-answer JSONL file beside it and PNG plots, and prints Markdown tables with 95 % intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from google.protobuf.json_format import MessageToDict

from benchmarks.checkpoint import Checkpoint, RecordedRows, checkpoint_path
from benchmarks.datasets import DATASETS, DEFAULT_FILES, Dataset, DatasetError, Example, load_examples
from benchmarks.measure import ModeMeasurer, uses
from benchmarks.prompts import (
    CSQA_ANSWER_PHRASE,
    GSM8K_ANSWER_PHRASE,
    WORKLOADS,
    Prompts,
    Workload,
    workload_prompts,
)
from benchmarks.report import (
    build_results,
    markdown_table,
    policy_comparison,
    policy_table,
    verification_table,
    write_answers,
    write_json,
    write_plots,
)
from benchmarks.runner import FIXED, MODE_NAMES, ModeRun, ModeSpec, PolicySpec, RequestSettings
from benchmarks.services import bench_services, servers_info
from edge_student.settings import EdgeSettings
from shared.catalog import DEFAULT_STUDENT
from shared.hardware import hardware_summary
from shared.pricing import Prices
from shared.protocol.domain import ModeName

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results"
# The paper's settings: GSM8K K=40 then up to 300 student tokens; CSQA K=30 then 100. The edge's max_tokens is the
# whole answer (guidance included, in the student's tokenizer), the same budget for every mode: K + the paper's rest.
PAPER_GUIDANCE_TOKENS: dict[Dataset, int] = {"gsm8k": 40, "csqa": 30}
PAPER_MAX_TOKENS: dict[Dataset, int] = {"gsm8k": 340, "csqa": 130}
# Chat answers are longer (prose reasoning, then the answer line): whole-answer budgets that fit the default teacher's
# answers (measured: see benchmarks/README.md, "Chat workload").
CHAT_MAX_TOKENS: dict[Dataset, int] = {"gsm8k": 640, "csqa": 256}
TeacherBackend = Literal["vllm", "llamacpp"]


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. `edge` set: use the running services there; unset: start a teacher and one edge per
    student, and stop them at the end."""

    dataset: Dataset = "csqa"
    workload: Workload = "fewshot"
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
    resume: bool = False  # reuse rows recorded earlier (interrupted or complete) whose own settings match
    warm_up: bool = True  # one untimed request through both tiers (a held-out question) before each measured mode
    # Launched services only: restart the tiers a mode uses when an earlier mode left its questions in their
    # caches, so that every mode starts from the same state (the shared prefix warm, nothing else).
    restart_between_modes: bool = True
    teacher_pid: int | None = None  # with `edge`: the running teacher's process, for its CPU seconds

    def resolved(self) -> BenchConfig:
        """The same with the dataset's defaults filled in."""
        budgets = PAPER_MAX_TOKENS if self.workload == "fewshot" else CHAT_MAX_TOKENS
        return replace(
            self,
            guidance_tokens=self.guidance_tokens or (PAPER_GUIDANCE_TOKENS[self.dataset],),
            max_tokens=self.max_tokens or budgets[self.dataset],
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


def cache_control(config: BenchConfig) -> dict[str, Any]:
    """How this run controls the tiers' caches, for the results (and a note the tables print)."""
    if config.edge is not None:
        return {
            "method": "none",
            "note": "NOT controlled: the services were already running (--edge); earlier requests, and earlier "
            "modes of this run, may have left these questions in the teacher's and the edge's prefix caches, "
            "which favours the later modes' speed and cost",
        }
    if not config.restart_between_modes:
        return {
            "method": "none",
            "note": "NOT controlled (--no-restart): each mode finds the earlier modes' questions in the caches, "
            "which favours the later modes' speed and cost",
        }
    warm = "warmed by one untimed request on a question that is not evaluated" if config.warm_up else "not warmed"
    return {
        "method": "restart",
        "note": "each mode started on services restarted since any earlier mode used them, " + warm + " (the "
        "shared prefix cached, none of the evaluated questions); restart time is not in the mode's wall time",
    }


def metadata(
    config: BenchConfig, prices: Prices, n: int, prompts: Prompts, edges: dict[str | None, str]
) -> dict[str, Any]:
    """The top of the results JSON: what was run, on what, with which prices."""
    return {
        "benchmark": "gkt bench",
        "dataset": config.dataset,
        "workload": config.workload,
        "data_file": _shown(Path(config.data or DEFAULT_FILES[config.dataset])),
        "n": n,
        "limit": config.limit,
        "shots": prompts.shots,
        "system_prompt": getattr(prompts, "system_prompt", ""),
        "answer_phrase": GSM8K_ANSWER_PHRASE if config.dataset == "gsm8k" else CSQA_ANSWER_PHRASE,
        "modes": [spec.key for spec in config.mode_specs()],
        "guidance_tokens": list(config.guidance_tokens),
        "guidance_policies": {
            p.name: MessageToDict(p.policy, preserving_proto_field_name=True) for p in config.policies
        },
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "seed": config.seed,
        "stop": list(prompts.stop),
        "concurrency": config.concurrency,
        "cache_control": cache_control(config),
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
    session_started = time.perf_counter()
    config = config.resolved()
    prompts, examples = await asyncio.to_thread(load_questions, config)
    if not examples:
        raise DatasetError("no questions to run (empty file, or --limit 0)")
    settings = RequestSettings(
        max_tokens=config.max_tokens or PAPER_MAX_TOKENS[config.dataset],
        temperature=config.temperature,
        seed=config.seed,
        stop=prompts.stop,
        timeout_seconds=config.timeout_seconds,
    )
    if cache_control(config)["method"] != "restart":
        logger.warning("caches are not controlled: %s", cache_control(config)["note"])
    recorded = RecordedRows()
    earlier: dict[str, Any] | None = None
    if config.resume and config.out is not None:
        earlier = recorded.load_results(config.out)
        recorded.load_progress(checkpoint_path(config.out))
    checkpoint = Checkpoint(checkpoint_path(config.out) if config.out else None)
    if not config.resume:
        checkpoint.discard()
    runs: list[ModeRun] = []
    resumed: list[str] = []
    fingerprints: dict[str, dict[str, Any]] = {}
    async with bench_services(config) as services:
        models = await servers_info(services.addresses)
        measurer = ModeMeasurer(config, services, prompts, examples, settings)
        await measurer.warm(list(services.addresses))  # also: the first measured mode pays no connection set-up
        for spec in config.mode_specs():
            fingerprint = row_fingerprint(config, settings, examples, models, spec)
            fingerprints[spec.key] = fingerprint
            reused = recorded.find(spec, fingerprint)
            if reused is not None:
                logger.info("%s: reusing the row recorded earlier with the same settings", spec.key)
                runs.append(reused)
                resumed.append(spec.key)
                continue
            run = await measurer.measure(spec)
            checkpoint.save(run, fingerprint)
            runs.append(run)
        addresses = dict(services.addresses)
    prices = EdgeSettings().prices()  # the edge's price settings (GKT_EDGE_*_PRICE_*), as its cost metrics use
    document = metadata(config, prices, len(examples), prompts, addresses)
    document["models"] = models
    # Rows measured by an earlier process: their speeds come from other engine instances.
    document["resumed_modes"] = resumed
    document["prompt_prefix_chars"] = len(prompts.shared_prefix)
    document["results"] = build_results(runs, prices)
    for key, row in document["results"].items():
        row["fingerprint"] = fingerprints[key]
    document["policy_comparison"] = policy_comparison(document["results"])
    this_run = {
        "date": document["date"],
        "wall_seconds": time.perf_counter() - session_started,
        "restart_seconds": sum(run.restart_seconds for run in runs if run.spec.key not in resumed),
        "modes_measured": [run.spec.key for run in runs if run.spec.key not in resumed],
        "modes_reused": resumed,
    }
    document["run_wall_seconds"] = this_run["wall_seconds"]
    # Every session that measured rows of these results, this one last (a resumed run inherits the earlier list).
    document["runs"] = [*(earlier.get("runs", []) if earlier and resumed else []), this_run]
    if config.out is not None:
        await asyncio.to_thread(write_outputs, document, runs, config.out, config.plots_dir)
    checkpoint.discard()
    return document


def row_fingerprint(
    config: BenchConfig, settings: RequestSettings, examples: Sequence[Example], models: dict[str, Any], spec: ModeSpec
) -> dict[str, Any]:
    """What must be the same for a recorded row to be reused in this run: the row's own mode, K, policy settings,
    the models it used (with the hardware and threads they ran on), the questions, the request settings (budgets,
    sampling, stop), the workload, the concurrency and how the caches were controlled."""
    teacher, student = uses(spec)
    return {
        "mode": spec.mode,
        "guidance_tokens": spec.guidance_tokens,
        "policy": MessageToDict(spec.policy.policy, preserving_proto_field_name=True) if spec.mode == "gkt" else None,
        "teacher": models["teacher"] if teacher else None,
        "student": models["students"].get(spec.student or "") if student else None,
        "dataset": config.dataset,
        "workload": config.workload,
        "questions": [example.id for example in examples],
        "settings": json.loads(json.dumps(asdict(settings))),
        "concurrency": config.concurrency,
        "cache_control": cache_control(config)["method"],
    }


def load_questions(config: BenchConfig) -> tuple[Prompts, list[Example]]:
    """The workload's prompts and the dataset's evaluation questions (the few-shot exemplars left out, in both
    workloads, so that both ask the same questions)."""
    prompts = workload_prompts(config.dataset, config.workload)
    examples = load_examples(config.dataset, config.data, exclude=prompts.exemplar_questions(), limit=config.limit)
    return prompts, examples


def _shown(path: Path) -> str:
    """A written file's path as the results record it: relative to the working directory (the repository, for
    committed results) when it lies under it, so the record does not name one machine's checkout."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_outputs(document: dict[str, Any], runs: Sequence[ModeRun], out: Path, plots_dir: Path | None) -> None:
    """The plots (`<out stem>_*.png`, beside `out` unless `plots_dir`), the per-answer JSONL (`<out
    stem>.answers.jsonl`) and the results JSON, which lists the other files under `files`."""
    answers = out.with_suffix(".answers.jsonl")
    plots = write_plots(document, plots_dir or out.parent, out.stem)
    document["files"] = {"answers": _shown(answers), "plots": [_shown(p) for p in plots]}
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
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="fewshot",
        help="fewshot: the paper's raw few-shot prompts; chat: the same questions as zero-shot chat messages with a "
        "system prompt, through each model's chat template (default %(default)s)",
    )
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
        help="tokens of the whole answer, guidance included, for every mode (default few-shot: 340 gsm8k, 130 "
        f"csqa; chat: {CHAT_MAX_TOKENS['gsm8k']} gsm8k, {CHAT_MAX_TOKENS['csqa']} csqa)",
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
        "--no-restart",
        dest="restart_between_modes",
        action="store_false",
        help="keep the launched services running from one mode to the next (quicker, but each mode then finds the "
        "earlier modes' questions in the caches, which favours the later modes; default: restart the tiers an "
        "earlier mode used, then warm them on a question that is not evaluated)",
    )
    p.add_argument(
        "--teacher-pid",
        type=_positive_int,
        help="with --edge: the running teacher's process id, to measure its CPU seconds per mode (launched "
        "services are measured anyway)",
    )
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
        metavar="[NAME=]fixed|adaptive|verify[:OPTIONS]",
        help="a guidance policy GKT runs with at each K (repeat for several; default: fixed; policies other than "
        "fixed run with the first student only). OPTIONS: floor=N, "
        "window=N, top1=F, logprob=F, escalate, entropy=F, run=N, bursts=N, burst=N; verify: draft=N, "
        "rule=strict|min_teacher_prob|speculative, tau=F, minprob=F, correction=N; k=N runs it at that K only; e.g. "
        "--guidance-policy a4=adaptive:floor=8,window=4 --guidance-policy v=verify:draft=8,k=0",
    )
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/<dataset>.json)")
    p.add_argument("--plots-dir", type=Path, help="where the PNG plots go (default: beside --out)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per request (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse rows recorded earlier whose own settings match (mode, K, policy, models, questions, budgets, "
        "workload, concurrency, cache control): those an interrupted run wrote to <out stem>.progress.jsonl and "
        "those of the complete results at --out; run only the rest. Without it the progress file starts afresh",
    )
    return p


def config_from_args(argv: Sequence[str]) -> BenchConfig:
    args = parser().parse_args(argv)
    return BenchConfig(
        dataset=args.dataset,
        workload=args.workload,
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
        out=args.out
        or RESULTS_DIR / (f"{args.dataset}.json" if args.workload == "fewshot" else f"{args.dataset}_chat.json"),
        plots_dir=args.plots_dir,
        timeout_seconds=args.timeout,
        progress=not args.no_progress,
        resume=args.resume,
        restart_between_modes=args.restart_between_modes,
        teacher_pid=args.teacher_pid,
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
    if document["cache_control"]["method"] != "restart":
        out.write(f"\nWARNING: caches {document['cache_control']['note']}.\n")
    out.write("\n" + markdown_table(document) + "\n")
    if table := policy_table(document):
        out.write(table + "\n")
    if table := verification_table(document):
        out.write(table + "\n")
    failed = {key: row["failed"] for key, row in document["results"].items() if row["failed"]}
    if failed:
        out.write(f"RPC failures (counted as wrong): {failed}; see the answers file for the errors\n")
    out.write(
        f"run wall time {document['run_wall_seconds']:.0f} s "
        f"(restarts and warm-ups {document['runs'][-1]['restart_seconds']:.0f} s)\n"
    )
    out.write(f"wrote {config.out}\n")
    for path in [document["files"]["answers"], *document["files"]["plots"]]:
        out.write(f"wrote {path}\n")
    return 1 if any(row["failed"] == row["n"] for row in document["results"].values()) else 0
