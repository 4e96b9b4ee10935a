"""The retry/park/dead-letter decision rests on these classification rules, so each rule is pinned here."""

from __future__ import annotations

import pickle

import pytest

from shared.errors import (
    SF_DAILY_LIMIT_RETRY_AFTER_S,
    AuthenticationFailed,
    DeltaExpired,
    GraphThrottled,
    IdsyncError,
    NotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    SalesforceDailyLimitExceeded,
    classify_graph,
    classify_salesforce,
)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (503, "SERVER_UNAVAILABLE", "Server busy"),
        (502, None, "Bad Gateway"),
        (500, "UNKNOWN_EXCEPTION", "An unexpected error occurred"),
        (400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records: 005xx"),
        (429, None, "Too many requests"),
        (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
    ],
)
def test_salesforce_transient_failures_are_retryable(status: int, code: str | None, message: str) -> None:
    cls = classify_salesforce(status, code, message)
    assert issubclass(cls, RetryableError)
    assert cls is not SalesforceDailyLimitExceeded


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "REQUIRED_FIELD_MISSING"),
        (400, "DUPLICATE_USERNAME"),
        (400, "FIELD_INTEGRITY_EXCEPTION"),
        (400, "LICENSE_LIMIT_EXCEEDED"),
        (403, "INSUFFICIENT_ACCESS"),
        (409, None),
    ],
)
def test_salesforce_validation_and_other_client_errors_are_permanent(status: int, code: str | None) -> None:
    assert issubclass(classify_salesforce(status, code, "nope"), PermanentError)


def test_salesforce_daily_request_limit_is_retryable_with_a_long_wait_so_work_is_parked_not_lost() -> None:
    cls = classify_salesforce(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    assert cls is SalesforceDailyLimitExceeded
    err = cls("TotalRequests Limit exceeded.", service="salesforce", status=403, code="REQUEST_LIMIT_EXCEEDED")
    assert isinstance(err, RetryableError)
    assert err.retry_after == SF_DAILY_LIMIT_RETRY_AFTER_S >= 3600


def test_salesforce_missing_record_and_rejected_session_have_their_own_permanent_classes() -> None:
    assert classify_salesforce(404, "NOT_FOUND", "The requested resource does not exist") is NotFound
    assert classify_salesforce(401, "INVALID_SESSION_ID", "Session expired or invalid") is AuthenticationFailed


@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequests"), (503, "serviceNotAvailable")])
def test_graph_throttling_statuses_are_graph_throttled(status: int, code: str) -> None:
    cls = classify_graph(status, code)
    assert cls is GraphThrottled
    assert issubclass(cls, RateLimited) and issubclass(cls, RetryableError)


def test_graph_server_errors_and_timeouts_are_retryable() -> None:
    assert classify_graph(500, "generalException") is RetryableError
    assert classify_graph(504, None) is RetryableError
    assert classify_graph(408, None) is RetryableError


def test_graph_gone_delta_token_is_delta_expired_whatever_the_status() -> None:
    assert classify_graph(410, "syncStateNotFound") is DeltaExpired
    assert classify_graph(400, "resyncRequired") is DeltaExpired
    assert classify_graph(410, None) is DeltaExpired


def test_graph_not_found_and_other_client_errors_are_permanent() -> None:
    assert classify_graph(404, "Request_ResourceNotFound") is NotFound
    assert classify_graph(400, "Request_BadRequest") is PermanentError
    assert classify_graph(403, "Authorization_RequestDenied") is PermanentError
    assert classify_graph(401, "InvalidAuthenticationToken") is AuthenticationFailed


def test_errors_carry_service_status_code_and_hint_and_render_them_in_one_line() -> None:
    err = GraphThrottled(
        "Please retry", service="graph", status=429, code="TooManyRequests", retry_after=2.5, request_id="r-1"
    )
    assert (err.service, err.status, err.code, err.message, err.retry_after) == (
        "graph",
        429,
        "TooManyRequests",
        "Please retry",
        2.5,
    )
    assert str(err) == "graph 429 TooManyRequests: Please retry (request-id r-1)"
    assert isinstance(err, IdsyncError)


def test_delta_expired_keeps_the_location_to_restart_from() -> None:
    err = DeltaExpired("gone", service="graph", status=410, location="https://g/v1.0/users/delta?$deltatoken=")
    assert err.location == "https://g/v1.0/users/delta?$deltatoken="
    assert isinstance(err, PermanentError)


def test_retryable_error_without_a_hint_leaves_the_wait_to_the_caller() -> None:
    assert RetryableError("x", service="redis").retry_after is None


def test_errors_survive_pickling_between_worker_processes_with_all_attributes() -> None:
    original = DeltaExpired("gone", service="graph", status=410, code="syncStateNotFound", location="https://g/x")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is DeltaExpired
    assert (copy.service, copy.status, copy.code, copy.location, str(copy)) == (
        "graph",
        410,
        "syncStateNotFound",
        "https://g/x",
        str(original),
    )
    throttled = pickle.loads(pickle.dumps(GraphThrottled("slow down", service="graph", retry_after=4.0)))
    assert throttled.retry_after == 4.0 and isinstance(throttled, RetryableError)
