"""Retry AWS calls on throttling and server errors, with exponential backoff and full jitter.

The destination clients are created with botocore's own retries turned off (:data:`NO_SDK_RETRIES`),
so this module is the one place that decides how often and how long to wait, and tests can hand in
a ``sleep`` that records the delays instead of waiting.

Example
-------
>>> waits = []
>>> policy = RetryPolicy(max_attempts=3, sleep=waits.append, random=lambda: 0.5)
>>> policy.call(lambda: "done")
'done'
>>> [policy.delay(attempt) for attempt in (1, 2, 3)]
[0.125, 0.25, 0.5]
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

logger = Logger(service="rfm-export", child=True)

T = TypeVar("T")

# Error codes that mean "slow down" or "try again" whatever the HTTP status says.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "InternalServerError",
        "InternalServerErrorException",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)

# botocore's retries off: RetryPolicy owns backoff, jitter and the attempt budget.
NO_SDK_RETRIES = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60
)


def error_code(error: BaseException) -> str:
    """The AWS error code of ``error`` (``ClientError``), else its class name."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "ClientError")
    return type(error).__name__


def is_retryable(error: BaseException) -> bool:
    """True for throttling (429 or a throttling code), 5xx, and connection failures and timeouts."""
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status == 429 or status >= 500 or error_code(error) in RETRYABLE_CODES
    return isinstance(error, (ConnectionError, HTTPClientError))


class OutOfTime(Exception):
    """A retry's wait would end at or past the policy's ``deadline``; the last failure is ``__cause__``."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one call.

    Parameters
    ----------
    max_attempts : int
        Attempts per call, the first included (1 = no retry).
    base_delay : float
        Seconds; the cap of the wait after the first failure, doubled after each further one.
    max_delay : float
        Seconds; the largest cap.
    sleep : callable
        ``sleep(seconds)``; tests pass ``list.append`` to record waits instead of waiting.
    random : callable
        Returns a float in [0, 1); the wait is ``random() * cap`` ("full jitter").
    deadline : float
        ``clock()`` time no wait may reach: such a retry raises :class:`OutOfTime` instead (see :meth:`until`).
    clock : callable
        Monotonic seconds, for ``deadline``.
    """

    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 20.0
    sleep: Callable[[float], Any] = field(default=time.sleep, compare=False)
    random: Callable[[], float] = field(default=_random.random, compare=False)
    deadline: float = math.inf
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def until(self, deadline: float | None, clock: Callable[[], float]) -> RetryPolicy:
        """This policy, giving up with :class:`OutOfTime` rather than wait to ``deadline`` (None: no deadline)."""
        return self if deadline is None else replace(self, deadline=deadline, clock=clock)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return self.random() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))

    def call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``operation(*args, **kwargs)``, retried while :func:`is_retryable` and attempts remain."""
        attempt = 1
        while True:
            try:
                return operation(*args, **kwargs)
            except Exception as error:
                if attempt >= self.max_attempts or not is_retryable(error):
                    raise
                wait = self.delay(attempt)
                if self.clock() + wait >= self.deadline:
                    raise OutOfTime(f"no time left to retry after {error_code(error)}") from error
                # The code only: messages of some services quote the request, which may hold contact data.
                logger.info(
                    "Transient AWS error, retrying",
                    extra={
                        "operation": getattr(operation, "__name__", "call"),
                        "error_code": error_code(error),
                        "attempt": attempt,
                        "wait_seconds": round(wait, 3),
                    },
                )
                self.sleep(wait)
                attempt += 1
