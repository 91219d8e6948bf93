"""The shared retry helper: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from lambdas.export.retry import NO_SDK_RETRIES, RetryPolicy, error_code, is_retryable
from tests.export_support import Sleeps


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Operation"
    )


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (client_error("TooManyRequestsException", 429), True),
        (client_error("ThrottlingException", 400), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalServerException", 500), True),
        (client_error("Whatever", 502), True),
        (client_error("SomeNewThrottleCode", 429), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (client_error("BadRequestException", 400), False),
        (client_error("NotFoundException", 404), False),
        (client_error("AccessDeniedException", 403), False),
        (ValueError("bug"), False),
    ],
)
def test_only_throttling_5xx_and_connection_errors_are_retryable(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


@pytest.mark.parametrize("attempt", range(1, 12))
@pytest.mark.parametrize("draw", [0.0, 0.3, 0.999])
def test_waits_are_full_jitter_under_an_exponential_cap(attempt: int, draw: float) -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=20.0, random=lambda: draw)
    cap = min(20.0, 0.25 * 2 ** (attempt - 1))
    assert policy.delay(attempt) == pytest.approx(draw * cap)
    assert 0 <= policy.delay(attempt) < 20.0


def test_transient_errors_are_retried_until_success() -> None:
    outcomes = [
        client_error("TooManyRequestsException", 429),
        client_error("InternalServerException", 500),
        "ok",
    ]
    calls = []

    def operation(value: int) -> str:
        calls.append(value)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, sleep=sleeps, random=lambda: 1.0)
    assert policy.call(operation, 7) == "ok"
    assert calls == [7, 7, 7] and sleeps == [1.0, 2.0]


def test_permanent_errors_are_raised_at_once() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=5, sleep=sleeps)
    with pytest.raises(ClientError, match="BadRequestException"):
        policy.call(lambda: (_ for _ in ()).throw(client_error("BadRequestException", 400)))
    assert sleeps == []


def test_gives_up_after_max_attempts() -> None:
    sleeps, calls = Sleeps(), []

    def throttled() -> None:
        calls.append(1)
        raise client_error("TooManyRequestsException", 429)

    with pytest.raises(ClientError):
        RetryPolicy(max_attempts=4, sleep=sleeps).call(throttled)
    assert len(calls) == 4 and len(sleeps) == 3


def test_sdk_retries_are_off_so_the_policy_owns_them() -> None:
    """A client made with NO_SDK_RETRIES sends a throttled request once; the RetryPolicy decides the rest."""
    import boto3
    from botocore.awsrequest import AWSResponse

    class Body:
        def stream(self, **_: Any) -> Any:
            return iter([b"<Error><Code>SlowDown</Code><Message>slow</Message></Error>"])

    sent = []

    def throttle(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        return AWSResponse(request.url, 503, {}, Body())

    client = boto3.client("s3", region_name="us-east-1", config=NO_SDK_RETRIES,
                          aws_access_key_id="x", aws_secret_access_key="x")
    client.meta.events.register("before-send.s3", throttle)
    with pytest.raises(ClientError) as caught:
        client.list_buckets()
    assert len(sent) == 1 and error_code(caught.value) == "SlowDown"
    assert error_code(ValueError()) == "ValueError"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "ten"])
def test_non_finite_or_bad_numbers_in_the_environment_are_clear_errors(value: str) -> None:
    from steps.environment import env_number
    from steps.errors import PipelineError

    with pytest.raises(PipelineError, match="PINPOINT_POLL_SECONDS"):
        env_number({"PINPOINT_POLL_SECONDS": value}, "PINPOINT_POLL_SECONDS", 5.0)
