"""Builds each long-running component from settings. One place, so `idsync <cmd>`, `idsync run` and docker compose
all wire the same objects the same way."""

from __future__ import annotations

from typing import Any

from shared.settings import Settings, SettingsError


class MissingRedis(SettingsError):
    hint = "start `idsync run` (it starts an embedded Redis and writes var/run.env), or set IDSYNC_REDIS_URL"


class MissingTenant(SettingsError):
    hint = "set IDSYNC_GRAPH_* and IDSYNC_SF_* (README: Configuring a real tenant), or use `idsync run` on the sandbox"


def redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise MissingRedis("IDSYNC_REDIS_URL: not set")
    return settings.redis_url


def require_tenant(settings: Settings) -> None:
    if not settings.tenant_configured:
        raise MissingTenant("IDSYNC_GRAPH_CLIENT_ID: no tenant configured")


def celery_app(settings: Settings) -> Any:
    from workers.app import create_app

    return create_app(settings)


def redis_client(settings: Settings) -> Any:
    from shared.redis_conn import get_redis

    return get_redis(redis_url(settings))


def limiter(settings: Settings) -> Any:
    from shared.limiter import Limiter

    return Limiter(redis_client(settings), settings)


def graph_client(settings: Settings, lane: str = "sync") -> Any:
    from shared.graph_client import GraphClient

    require_tenant(settings)
    return GraphClient(settings, limiter=limiter(settings), lane=lane)


def subscription_manager(settings: Settings) -> Any:
    from producers.subscriptions import SubscriptionManager

    return SubscriptionManager(graph_client(settings), redis_client(settings), settings)


def webhook_app(settings: Settings) -> Any:
    from producers.webhook import create_app

    return create_app(settings, celery_app(settings), redis_client(settings), subscription_manager(settings))


def delta_poller(settings: Settings) -> Any:
    from producers.delta_poller import DeltaPoller

    return DeltaPoller(graph_client(settings), celery_app(settings), redis_client(settings), settings,
                       start_from_now=settings.delta_start_from_now)


def salesforce_client(settings: Settings, lane: str = "sync") -> Any:
    from shared.salesforce_client import SalesforceClient

    require_tenant(settings)
    return SalesforceClient(settings, limiter=limiter(settings), lane=lane)


def requests_enabled(settings: Settings) -> bool:
    """True when the running mapping turns the reverse flow on (`requests: {enabled: true}`)."""
    from shared.running_mapping import current_mapping

    spec = current_mapping(settings).requests
    return bool(spec is not None and spec.enabled)


def request_poller(settings: Settings) -> Any:
    from producers.request_poller import RequestPoller
    from shared.running_mapping import current_mapping

    return RequestPoller(salesforce_client(settings), celery_app(settings), redis_client(settings),
                         settings.graph_tenant_id or "default", lambda: current_mapping(settings))
