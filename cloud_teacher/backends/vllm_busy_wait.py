"""How long vLLM's engine core and its worker spin while they wait for each other.

vLLM's processes pass each engine step through a shared-memory queue; a reader that got a message in the last
`busy_loop_s` seconds (1 by default) waits for the next one by spinning on `sched_yield` instead of sleeping on the
queue's notify socket. During generation a step comes every few hundred milliseconds on CPU, so the engine core
spins through every forward pass of its worker: a whole core of CPU that does no work. On a GPU host that core is
spare; on a CPU host it is a compute core that the worker's threads, or an edge's student on the same machine,
need. Measured here (2 cores, vLLM 0.32 CPU, one request decoding): engine core 97 % and worker 100 % of a core
each while spinning. The pinned vLLM has no setting for it, so the reader side's window is set here, before the
engine's processes are forked (they inherit it).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

logger = logging.getLogger(__name__)

_ORIGINAL_INIT = "_gkt_original_init"


def limit_busy_wait(seconds: float) -> bool:
    """Makes every shared-memory queue reader created from now on in this process (and the processes it forks) spin
    at most `seconds` after a message before it sleeps until notified. Returns False, leaving vLLM as it is, when
    the installed vLLM does not have the spin-then-sleep wait this expects."""
    try:
        from vllm.distributed.device_communicators import shm_broadcast
    except ImportError:
        return False
    condition: Any = getattr(shm_broadcast, "SpinCondition", None)
    original = getattr(condition, _ORIGINAL_INIT, None) or getattr(condition, "__init__", None)
    if condition is None or original is None or "busy_loop_s" not in inspect.signature(original).parameters:
        logger.warning("this vLLM has no SpinCondition(busy_loop_s=...): its busy-wait is left as it is")
        return False

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["busy_loop_s"] = seconds
        original(self, *args, **kwargs)

    setattr(condition, _ORIGINAL_INIT, original)
    condition.__init__ = init
    return True
