"""The only exceptions the Graph and Salesforce clients raise, and the one place that decides what is retryable.

Why one module: a worker decides between "retry later", "park" and "dead-letter" from the exception class alone,
so the rules for which HTTP status or Salesforce error code means what must live in two pure functions
(`classify_graph`, `classify_salesforce`) that are tested directly, not be spread over the clients.

Messages never carry secrets: they are built from status, error code and the server's error message only.
"""

from __future__ import annotations

from typing import Required, TypedDict, Unpack

SERVICE_GRAPH = "graph"
SERVICE_SALESFORCE = "salesforce"
SERVICE_REDIS = "redis"

#: Seconds to park work when Salesforce's rolling 24 h API allowance is used up: long enough not to burn calls,
#: short enough that the event is retried the same day.
SF_DAILY_LIMIT_RETRY_AFTER_S = 3600.0


class ErrorFields(TypedDict, total=False):
    """The keywords every `IdsyncError` takes, so subclasses can pass them on typed."""

    service: Required[str]
    status: int | None
    code: str | None
    request_id: str | None


class IdsyncError(Exception):
    """Base of every client error; carries enough to log and decide, never a secret."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.service = service
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors defeat Exception's default pickling, and Celery's prefork pool pickles
        # exceptions between child and parent: rebuild from the attribute dict instead.
        return (_rebuild, (type(self), self.message, self.__dict__))

    def __str__(self) -> str:
        parts = [self.service]
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        text = " ".join(parts) + f": {self.message}"
        if self.request_id:
            text += f" (request-id {self.request_id})"
        return text


def _rebuild(cls: type[IdsyncError], message: str, state: dict[str, object]) -> IdsyncError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RetryableError(IdsyncError):
    """Try again later; `retry_after` is the server's (or limiter's) hint in seconds, None = use your backoff."""

    #: Used when the server gives no hint but the class itself implies a wait (e.g. a daily limit).
    default_retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Unpack[ErrorFields]) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after


class PermanentError(IdsyncError):
    """Retrying the same request cannot succeed: fix data or configuration, then replay."""


class RateLimited(RetryableError):
    """A rate limit (ours or the service's) says wait `retry_after` seconds."""


class GraphThrottled(RateLimited):
    """Graph answered 429/503, or the shared limiter says the app+tenant is throttled."""


class SalesforceThrottled(RateLimited):
    """The shared limiter refused a Salesforce call (rate, or the sync lane is paused near the daily limit)."""


class SalesforceDailyLimitExceeded(RateLimited):
    """`REQUEST_LIMIT_EXCEEDED` "TotalRequests Limit exceeded": park the work, do not lose it."""

    default_retry_after = SF_DAILY_LIMIT_RETRY_AFTER_S


class TransportError(RetryableError):
    """No usable HTTP response: timeout, connection refused/reset, TLS failure."""


class NotFound(PermanentError):
    """The object does not exist (Graph 404 Request_ResourceNotFound, Salesforce NOT_FOUND)."""


class AuthenticationFailed(PermanentError):
    """Credentials were rejected (token endpoint 4xx, or a fresh token refused): configuration, not load."""


class DeltaExpired(PermanentError):
    """The stored delta link is dead (410); restart from `location` (or a fresh delta) with a full resync."""

    def __init__(self, message: str, *, location: str | None = None, **kwargs: Unpack[ErrorFields]) -> None:
        super().__init__(message, **kwargs)
        self.location = location


#: Salesforce error codes that mean "the same call will work later".
_SF_RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION", "QUERY_TIMEOUT"})
#: Graph error codes that mean the delta token is gone.
_GRAPH_DELTA_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})


def classify_salesforce(status: int, code: str | None, message: str) -> type[IdsyncError]:
    """Pick the error class for a Salesforce REST error.

    `REQUEST_LIMIT_EXCEEDED` has two meanings: the daily allowance ("TotalRequests Limit exceeded") parks the work
    for an hour; the concurrent-long-request cap clears in seconds, so it is an ordinary retry.
    """
    if code == "REQUEST_LIMIT_EXCEEDED":
        if "totalrequests" in message.replace(" ", "").lower():
            return SalesforceDailyLimitExceeded
        return RateLimited
    if code in _SF_RETRYABLE_CODES:
        return RetryableError
    if status == 429:
        return RateLimited
    if status == 408 or status >= 500:
        return RetryableError
    if status == 404 or code in {"NOT_FOUND", "ENTITY_IS_DELETED"}:
        return NotFound
    if status == 401:
        return AuthenticationFailed
    return PermanentError


def classify_graph(status: int, code: str | None) -> type[IdsyncError]:
    """Pick the error class for a Graph error response.

    503 is treated like 429 because Graph sends Retry-After with both and the wait applies to the whole tenant.
    """
    lowered = (code or "").lower()
    if status in (429, 503):
        return GraphThrottled
    if status == 410 or lowered in _GRAPH_DELTA_CODES:
        return DeltaExpired
    if status == 408 or status >= 500:
        return RetryableError
    if status == 404:
        return NotFound
    if status == 401:
        return AuthenticationFailed
    return PermanentError
