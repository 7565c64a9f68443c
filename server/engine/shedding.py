"""What the engine does with a group of requests whose prefill failed: plain Python, no torch."""

import logging

from server.engine.request import EngineError, OutOfMemory
from server.engine.sequence import Sequence

logger = logging.getLogger(__name__)


def halve(joining: list[Sequence], exc: Exception) -> tuple[list[Sequence], list[Sequence]]:
    """A prefill failed: the half to retry now and the half to go back to the head of the queue.

    Out of memory, a smaller group may fit; any other failure is halved down to the one request that causes
    it, so the others in its group are served as if it had never come. A request alone out of memory fails.
    """
    if len(joining) == 1:  # only out of memory gets here alone
        logger.error("out of memory prefilling request %s alone: %s", joining[0].request_id, exc)
        joining[0].fail(EngineError("out of memory: this request does not fit next to the running batch"))
        return [], []
    keep, back = joining[: len(joining) // 2], joining[len(joining) // 2 :]
    logger.warning("%s prefilling %d requests; retrying %d, requeueing %d",
                   "out of memory" if isinstance(exc, OutOfMemory) else f"{type(exc).__name__} ({exc})",
                   len(joining), len(keep), len(back))
    return keep, back
