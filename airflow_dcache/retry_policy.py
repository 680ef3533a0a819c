"""The retry policy of every dCache operator and sensor: a refusal fails at once, an outage retries.

Airflow 3.3 asks a task's ``retry_policy`` (in the worker, with the real exception) whether to use
the task's retries. A 403 or 404 will be refused again however long one waits, so retrying it only
delays the failure by the whole backoff (minutes, with the pipelines' exponential backoff); a 5xx,
408, 429 or a dropped connection may pass. The classification is
:func:`airflow_dcache.exceptions.is_permanent`. Use it for your own ``@task`` steps that call the
hooks, e.g. ``default_args={"retry_policy": DCacheRetryPolicy()}``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

from airflow_dcache.exceptions import is_permanent

__all__ = ["DCacheRetryPolicy"]


class DCacheRetryPolicy(RetryPolicy):
    """Fail without retrying on permanent dCache refusals; everything else uses the task's retries."""

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int,
                 context: Any = None) -> RetryDecision:
        cause: BaseException | None = exception
        for _ in range(5):  # the refusal may be wrapped (raise ... from exc) by the task's own code
            if cause is None:
                break
            if is_permanent(cause):
                return RetryDecision.fail(f"permanent refusal, not retried: {cause}")
            cause = cause.__cause__
        return RetryDecision.default()

    def serialize(self) -> dict[str, Any]:
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> DCacheRetryPolicy:
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DCacheRetryPolicy)

    def __hash__(self) -> int:
        return hash(DCacheRetryPolicy)
