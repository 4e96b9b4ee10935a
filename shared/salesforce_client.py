"""Salesforce REST via simple-salesforce in direct mode, with our own token handling, timeouts and error mapping.

Why direct mode plus our own client-credentials call: simple-salesforce's built-in refresh retries forever on
repeated INVALID_SESSION_ID in `SFType` (issue #804) and has no request timeout at all; here a rejected session gets
exactly one new token, and every request has a timeout from an adapter it cannot bypass. Why a response hook: the
`Sforce-Limit-Info` header rides on every response, errors included, and is how we see the daily allowance run out
before Salesforce starts refusing calls.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession
from simple_salesforce.format import format_soql

from shared.errors import (
    SERVICE_SALESFORCE,
    AuthenticationFailed,
    IdsyncError,
    NotFound,
    RetryableError,
    SalesforceThrottled,
    TransportError,
    classify_salesforce,
)
from shared.http_sessions import pinned_session
from shared.limiter import Limiter
from shared.logging import get_logger

USER_FIELDS = "Id, Username, IsActive, FederationIdentifier, Email, ProfileId"
#: Records per sObject Collections call (docs/decisions.md#salesforce-composite-and-collections).
COLLECTION_LIMIT = 200
#: Queries (and collection operations) one composite request may carry.
COMPOSITE_QUERY_LIMIT = 5
_USAGE = re.compile(r"(?:^|[^-])api-usage=(\d+)/(\d+)")

T = TypeVar("T")
log = get_logger(__name__)


def parse_api_usage(header: str | None) -> tuple[int, int] | None:
    """`api-usage=18/5000; per-app-api-usage=17/250(appName=x)` -> (18, 5000); the per-app figure is ignored."""
    if not header:
        return None
    match = _USAGE.search(header)
    return (int(match.group(1)), int(match.group(2))) if match else None


class SalesforceClient:
    """One org's REST API for one lane; not thread-safe (one per worker process or thread)."""

    def __init__(
        self,
        settings: Any,
        limiter: Limiter | None = None,
        lane: str = "sync",
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.sf_client_id:
            raise ValueError("Salesforce is not configured (IDSYNC_SF_* settings are unset)")
        self._settings = settings
        self._limiter = limiter
        self._lane = lane
        self._sleep = sleep
        self._session = pinned_session(settings.ca_bundle, float(settings.sf_timeout_s))
        self._session.hooks["response"].append(self._on_response)
        self._sf: Salesforce | None = None
        #: API calls sent (token requests excluded: Salesforce does not count them against the allowance)
        self.calls = 0
        self._identity_url: str | None = None

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _on_response(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        usage = parse_api_usage(response.headers.get("Sforce-Limit-Info"))
        if usage is None:
            return
        if self._limiter is not None:
            try:
                self._limiter.record_sf_usage(*usage)
            except IdsyncError as exc:
                log.warning("salesforce_usage_not_recorded", error=str(exc))

    def _fetch_token(self) -> tuple[str, str]:
        """Client-credentials token from the org's My Domain (docs/decisions.md#salesforce-client-credentials);
        returns (access token, instance URL)."""
        s = self._settings
        url = f"{str(s.sf_url).rstrip('/')}/services/oauth2/token"
        try:
            response = self._session.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(s.sf_client_id, s.sf_client_secret.get_secret_value()),
                headers={"Accept": "application/json"},
            )
        except requests.RequestException as exc:
            raise _transport_error(exc) from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 500 or response.status_code == 429:
            raise RetryableError("token endpoint unavailable", service=SERVICE_SALESFORCE, status=response.status_code)
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not token:
            code = str(body.get("error")) if isinstance(body, dict) and body.get("error") else None
            raise AuthenticationFailed(
                "client-credentials token request rejected",
                service=SERVICE_SALESFORCE,
                status=response.status_code,
                code=code,
            )
        if isinstance(body.get("id"), str):
            self._identity_url = str(body["id"])
        return str(token), str(body.get("instance_url") or s.sf_url)

    def _connection(self) -> Salesforce:
        if self._sf is None:
            token, instance_url = self._fetch_token()
            self._sf = Salesforce(
                instance_url=instance_url,
                session_id=token,
                session=self._session,
                version=self._settings.sf_api_version,
            )
        return self._sf

    def _admit(self) -> None:
        if self._limiter is None:
            return
        wait = self._limiter.admit(SERVICE_SALESFORCE, self._lane, sleep=self._sleep)
        if wait > 0:
            raise SalesforceThrottled("rate limit reached", service=SERVICE_SALESFORCE, retry_after=wait)

    def _call(self, op: Callable[[Salesforce], T]) -> T:
        """Run one API call; a rejected session gets one new token and one retry, never more."""
        refreshed = False
        while True:
            self._admit()
            sf = self._connection()
            self.calls += 1
            try:
                return op(sf)
            except SalesforceExpiredSession as exc:
                self._sf = None
                if refreshed:
                    raise _map_salesforce_error(exc) from exc
                refreshed = True
                log.info("salesforce_session_refresh")
            except SalesforceError as exc:
                raise _map_salesforce_error(exc) from exc
            except requests.RequestException as exc:
                raise _transport_error(exc) from exc

    # --- queries ----------------------------------------------------------------------------------------------
    def query_all(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a query; each page is its own admitted call, so a long query yields to revocations."""
        page = self._call(lambda sf: sf.query(soql))
        records: list[dict[str, Any]] = list(page.get("records", []))
        while not page.get("done", True) and page.get("nextRecordsUrl"):
            next_url = page["nextRecordsUrl"]
            page = self._call(partial(_query_more, next_url))
            records.extend(page.get("records", []))
        return records

    def query_pages(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        """The records of a query one page at a time (2,000 rows, Salesforce's default and largest REST page), each
        page its own admitted call: a caller streaming 100,000 users never holds more than a page of raw rows."""
        page = self.query_page(soql)
        yield list(page.get("records", []))
        yield from self.more_pages(page)

    def query_page(self, soql: str) -> dict[str, Any]:
        """A query's first page as Salesforce answers it (`records`, `totalSize`, `done`, `nextRecordsUrl`): the
        caller learns how many rows there are before deciding how to read the rest (`more_pages` or a Bulk job)."""
        page = self._call(lambda sf: sf.query(soql))
        return dict(page)

    def more_pages(self, page: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """The pages after `page` (from `query_page`), one admitted call each."""
        while not page.get("done", True) and page.get("nextRecordsUrl"):
            next_url = page["nextRecordsUrl"]
            page = self._call(partial(_query_more, next_url))
            yield list(page.get("records", []))

    def own_user_id(self) -> str | None:
        """The Salesforce user idsync runs as (the client-credentials run-as user), without an API call: the token
        response's `id` is the identity URL `https://<domain>/id/<org id>/<user id>`
        (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_openid.htm). Fetches a token if none
        was issued yet; None when the response carried no identity URL."""
        self._connection()
        if not self._identity_url:
            return None
        return self._identity_url.rstrip("/").rsplit("/", 1)[-1] or None

    def find_user(self, entra_id: str | None, federation_id: str | None, username: str | None) -> dict[str, Any] | None:
        """The Salesforce user for an Entra user: by FederationIdentifier (explicit id first, then the Entra object
        id), else by Username. Matching prefers the federation id because usernames get renamed."""
        candidates = list(dict.fromkeys(v for v in (federation_id, entra_id) if v))
        clauses: list[str] = []
        values: list[str | list[str]] = []
        if candidates:
            clauses.append("FederationIdentifier IN {}")
            values.append(candidates)
        if username:
            clauses.append("Username = {}")
            values.append(username)
        if not clauses:
            return None
        # One query for every way of matching (it is on the revocation hot path), preference applied here.
        found = self.query_all(format_soql(f"SELECT {USER_FIELDS} FROM User WHERE {' OR '.join(clauses)}", *values))
        for wanted in candidates:
            for record in found:
                if record.get("FederationIdentifier") == wanted:
                    return record
        for record in found:
            if username and record.get("Username") == username:
                return record
        return found[0] if found else None

    def get_user_login(self, user_id: str) -> dict[str, Any] | None:
        found = self.query_all(format_soql("SELECT Id, UserId, IsFrozen FROM UserLogin WHERE UserId = {}", user_id))
        return found[0] if found else None

    # --- writes -----------------------------------------------------------------------------------------------
    def update_record(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        path = f"sobjects/{quote(sobject, safe='')}/{quote(record_id, safe='')}"
        self._restful(path, "PATCH", data=json.dumps(fields))

    def _set_frozen(self, user_id: str, frozen: bool, login: dict[str, Any] | None = None) -> None:
        login = login if login is not None else self.get_user_login(user_id)
        if login is None:
            raise NotFound(f"no UserLogin for user {user_id}", service=SERVICE_SALESFORCE, code="NOT_FOUND")
        if bool(login.get("IsFrozen")) == frozen:
            return
        self.update_record("UserLogin", str(login["Id"]), {"IsFrozen": frozen})

    def freeze_user(self, user_id: str, login: dict[str, Any] | None = None) -> None:
        """Block log-in at once; works even when deactivation is blocked (default owner, workflow user...).

        Pass the `UserLogin` row when the caller already read it: one query less on the revocation hot path.
        """
        self._set_frozen(user_id, True, login)

    def unfreeze_user(self, user_id: str) -> None:
        self._set_frozen(user_id, False)

    def deactivate_user(self, user_id: str) -> None:
        self.update_record("User", user_id, {"IsActive": False})

    def activate_user(self, user_id: str) -> None:
        self.update_record("User", user_id, {"IsActive": True})

    def composite(self, requests: list[dict[str, Any]], all_or_none: bool = True) -> list[dict[str, Any]]:
        """POST composite (≤25 subrequests); subrequest failures come back in the list, they are not raised."""
        body = json.dumps({"allOrNone": all_or_none, "compositeRequest": requests})
        result = self._restful("composite", "POST", data=body)
        return list((result or {}).get("compositeResponse", []))

    def collections_update(self, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        """PATCH composite/sobjects in chunks of 200; per-record results in input order.

        `all_or_none` holds per chunk only: Salesforce has no transaction across calls.
        """
        for record in records:
            if not (isinstance(record.get("attributes"), dict) and record["attributes"].get("type")):
                raise ValueError("every record needs attributes.type")
            if not record.get("id"):
                raise ValueError("every record needs an id")
        results: list[dict[str, Any]] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            body = json.dumps({"allOrNone": all_or_none, "records": records[start : start + COLLECTION_LIMIT]})
            chunk = self._restful("composite/sobjects", "PATCH", data=body)
            results.extend(chunk or [])
        return results

    def create_records(self, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
        """POST composite/sobjects in chunks of 200 (one API call per chunk); per-record results in input order.

        Each record needs `attributes.type`. With all_or_none False one bad record fails alone, and the caller
        turns its errors into review items or retries.
        """
        for record in records:
            if not (isinstance(record.get("attributes"), dict) and record["attributes"].get("type")):
                raise ValueError("every record needs attributes.type")
        results: list[dict[str, Any]] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            body = json.dumps({"allOrNone": all_or_none, "records": records[start : start + COLLECTION_LIMIT]})
            chunk = self._restful("composite/sobjects", "POST", data=body)
            results.extend(chunk or [])
        return results

    def delete_records(self, ids: list[str], all_or_none: bool = False) -> list[dict[str, Any]]:
        """DELETE composite/sobjects?ids=... in chunks of 200; per-record results in input order."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(ids), COLLECTION_LIMIT):
            chunk_ids = ",".join(ids[start : start + COLLECTION_LIMIT])
            params = {"ids": chunk_ids, "allOrNone": "true" if all_or_none else "false"}
            chunk = self._restful("composite/sobjects", "DELETE", params=params)
            results.extend(chunk or [])
        return results

    def _restful(self, path: str, method: str, **kwargs: Any) -> Any:
        """One call to the REST resource `path` (relative to the API version), through `_call`."""
        return self._call(lambda sf: sf.restful(path, method=method, **kwargs))

    def query_many(self, soqls: list[str]) -> list[list[dict[str, Any]]]:
        """Run several queries through the composite resource, five per call; every page of every query.

        Why composite: Salesforce counts a whole composite request as ONE call against the daily allowance, and it
        takes up to 25 subrequests of which at most 5 may be queries (https://developer.salesforce.com/docs/
        atlas.en-us.api_rest.meta/api_rest/resources_composite_composite.htm). Reading a batch of 200 users'
        User rows, permission set assignments, licences and group memberships is therefore one call, not four.
        """
        return self.query_many_and_get(soqls, [])[0]

    def query_many_and_get(self, soqls: list[str],
                           paths: list[str]) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
        """`query_many`, with GETs of other sObject resources (`sobjects/User/describe`) riding in the first composite
        call: composite carries "all sObject resources" besides queries (same page), and a GET is not one of the five
        queries, so the catalogue's six queries and the User describe cost two calls, not three."""
        version = self._settings.sf_api_version
        results: list[list[dict[str, Any]]] = [[] for _ in soqls]
        got: list[dict[str, Any]] = [{} for _ in paths]
        # (index, url) of queries still to run: a first page, or a nextRecordsUrl
        todo: list[tuple[int, str]] = [
            (i, f"/services/data/v{version}/query?q={quote(q, safe='')}") for i, q in enumerate(soqls)
        ]
        extra = [f"/services/data/v{version}/{path.lstrip('/')}" for path in paths]
        while todo or extra:
            chunk, todo = todo[:COMPOSITE_QUERY_LIMIT], todo[COMPOSITE_QUERY_LIMIT:]
            subrequests = [
                {"method": "GET", "url": url, "referenceId": f"q{n}"} for n, (_, url) in enumerate(chunk)
            ] + [{"method": "GET", "url": url, "referenceId": f"g{n}"} for n, url in enumerate(extra)]
            replies = self.composite(subrequests, all_or_none=False)
            by_ref = {str(r.get("referenceId")): r for r in replies}
            for n, (index, _) in enumerate(chunk):
                body = _reply_body(by_ref, f"q{n}")
                results[index].extend(body.get("records", []))
                if not body.get("done", True) and body.get("nextRecordsUrl"):
                    todo.append((index, str(body["nextRecordsUrl"])))
            for n in range(len(extra)):
                got[n] = _reply_body(by_ref, f"g{n}")
            extra = []
        return results, got

    def describe(self, sobject: str) -> dict[str, Any]:
        """The sObject's describe (fields with type, length, picklist values, createable/updateable)."""
        path = f"sobjects/{quote(sobject, safe='')}/describe"
        result = self._restful(path, "GET")
        return dict(result or {})

    def collections_upsert(self, sobject: str, external_id_field: str, records: list[dict[str, Any]],
                           all_or_none: bool = False) -> list[dict[str, Any]]:
        """PATCH composite/sobjects/{sobject}/{externalIdField} in chunks of 200: create or update by external id,
        so sending the same records again changes nothing. Per-record results in input order."""
        path = f"composite/sobjects/{quote(sobject, safe='')}/{quote(external_id_field, safe='')}"
        results: list[dict[str, Any]] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk_records = [{"attributes": {"type": sobject}, **r} for r in records[start : start + COLLECTION_LIMIT]]
            body = json.dumps({"allOrNone": all_or_none, "records": chunk_records})
            chunk = self._restful(path, "PATCH", data=body)
            results.extend(chunk or [])
        return results

    def request_text(self, method: str, path: str, *, body: str | None = None,
                     content_type: str = "application/json", accept: str = "application/json") -> str:
        """One admitted call to a REST resource below `/services/data/vXX.X/`, answered as text: Bulk API 2.0
        takes and returns CSV, which `restful` (JSON only) cannot carry. Errors are mapped like every other call."""
        return self.request_with_headers(method, path, body=body, content_type=content_type, accept=accept)[0]

    def request_with_headers(self, method: str, path: str, *, body: str | None = None,
                             content_type: str = "application/json",
                             accept: str = "application/json") -> tuple[str, dict[str, str]]:
        """`request_text` with the response headers: Bulk API 2.0 query results page with the `Sforce-Locator`
        header, not in the body."""

        def op(sf: Salesforce) -> tuple[str, dict[str, str]]:
            # simple-salesforce's own request helper: raises SalesforceError on >= 300, like `restful`.
            response = sf._call_salesforce(method, sf.base_url + path, name=path, data=body,
                                           headers={"Content-Type": content_type, "Accept": accept})
            return str(response.text), {str(k).lower(): str(v) for k, v in response.headers.items()}

        return self._call(op)

    def close(self) -> None:
        self._session.close()


def _query_more(next_url: str, sf: Salesforce) -> Any:
    return sf.query_more(next_url, identifier_is_url=True)


def _transport_error(exc: requests.RequestException) -> TransportError:
    if isinstance(exc, requests.Timeout):
        return TransportError("request timed out", service=SERVICE_SALESFORCE, code="timeout")
    if isinstance(exc, requests.exceptions.SSLError):
        return TransportError("TLS verification failed", service=SERVICE_SALESFORCE, code="tls")
    return TransportError(f"connection failed: {type(exc).__name__}", service=SERVICE_SALESFORCE, code="connection")


def _reply_body(by_ref: dict[str, Any], ref: str) -> dict[str, Any]:
    """The body of one composite subrequest's reply; a failed subrequest raises as a direct call would."""
    reply = by_ref.get(ref) or {}
    status = int(reply.get("httpStatusCode") or 0)
    body = reply.get("body")
    if status >= 400 or not isinstance(body, dict):
        raise _composite_error(status, body)
    return body


def _composite_error(status: int, body: Any) -> IdsyncError:
    """A failed composite subrequest, classified like a direct call would have been."""
    first = body[0] if isinstance(body, list) and body else body
    code = str(first.get("errorCode")) if isinstance(first, dict) and first.get("errorCode") else None
    message = str(first.get("message")) if isinstance(first, dict) and first.get("message") else f"HTTP {status}"
    cls = classify_salesforce(status or 500, code, message)
    return cls(message[:500], service=SERVICE_SALESFORCE, status=status or None, code=code)


def _map_salesforce_error(exc: SalesforceError) -> IdsyncError:
    """simple-salesforce's exception (status + parsed body) -> our class, via `classify_salesforce`."""
    status = int(getattr(exc, "status", 0) or 0)
    content = getattr(exc, "content", None)
    code: str | None = None
    message = ""
    first = content[0] if isinstance(content, list) and content else content
    if isinstance(first, dict):
        code = first.get("errorCode") or first.get("error")
        message = str(first.get("message") or first.get("error_description") or "")
    elif isinstance(content, str | bytes):
        message = content.decode(errors="replace") if isinstance(content, bytes) else content
    message = (message or f"HTTP {status}")[:500]
    cls = classify_salesforce(status, code, message)
    return cls(message, service=SERVICE_SALESFORCE, status=status or None, code=code)
