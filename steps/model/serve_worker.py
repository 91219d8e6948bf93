"""gunicorn's asyncio worker, stopping as soon as it is told to.

Its main loop wakes once a second to notice a stop, so every ``serve`` shutdown (each local
transform, each test) waited up to a second for nothing. On SIGTERM, SIGINT or SIGQUIT this worker
also cancels that sleep; the stop itself is gunicorn's (a graceful one still lets the requests in
flight finish). ``serve`` names it as its ``worker_class``.
"""

from __future__ import annotations

import asyncio

from gunicorn.workers.gasgi import ASGIWorker


class PromptASGIWorker(ASGIWorker):
    """:class:`~gunicorn.workers.gasgi.ASGIWorker` whose stop signals wake its main loop."""

    _woken = False

    def handle_exit_signal(self) -> None:
        super().handle_exit_signal()
        self._wake()

    def handle_quit_signal(self) -> None:
        super().handle_quit_signal()
        self._wake()

    def _wake(self) -> None:
        """Cancel the main loop's one-second sleep, once, when it is serving (not during start-up, where a
        cancellation would not be caught)."""
        if self._woken or not self.servers:
            return
        self._woken = True
        for task in asyncio.all_tasks(self.loop):
            if task.get_coro().__qualname__.endswith("._serve"):
                task.cancel()
