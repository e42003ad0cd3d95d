"""Long-running tasks tied to a block of code: started on entry, cancelled on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0


@contextlib.asynccontextmanager
async def running(coroutine: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    task = asyncio.create_task(coroutine, name=name)
    try:
        yield
    finally:
        task.cancel()
        # A task stuck in a driver call must not hold up shutdown for ever.
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_SECONDS)
        if not done:
            log.warning("%s did not stop within %.0f s; leaving it", name, STOP_TIMEOUT_SECONDS)
        elif not task.cancelled() and task.exception() is not None:
            log.error("%s had failed", name, exc_info=task.exception())
