"""`gkt`: the project's command line (ask the edge, run the stack, prepare models, benchmark)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: gkt <command> [options]

commands:
  ask "question"     ask the edge service (gkt ask --help)
  up                 start teacher + edge on the default models, ask a demo question, serve until Ctrl-C
  models list        the built-in models (gkt models --help)
  models prepare     install, join and verify models; --vllm converts them for vLLM (once)
  bench              run GSM8K / CSQA through the running services in every mode (gkt bench --help)
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else ""
    if command == "ask":
        from gkt_cli.ask import ask_main

        sys.exit(ask_main(args))
    if command == "up":
        from gkt_cli.up import up_main

        sys.exit(up_main(args))
    if command == "models":
        from gkt_cli.models import models_main

        sys.exit(models_main(args))
    if command == "bench":
        from benchmarks.gkt_bench import bench_main

        sys.exit(bench_main(args))
    sys.stdout.write(USAGE)
    sys.exit(0 if command in ("", "-h", "--help", "help") else 2)


if __name__ == "__main__":
    main()
