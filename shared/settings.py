"""The one settings model. Every knob idsync has is a field here, read from `IDSYNC_*` variables or `.env`.

Why one model: operators should find every setting in one place, and a typo must stop start-up with a line that
names the setting, not surface an hour later as a confusing runtime error.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDSYNC_",
        env_file=(".env", "var/run.env", "var/sandbox.env"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- Redis (broker, limiter, DLQ, checkpoints). Unset: `idsync run` starts an embedded one.
    redis_url: str | None = None

    # --- Microsoft Entra ID / Graph (all or none; none = sandbox mode for `idsync run`)
    graph_authority: str | None = None  # https://login.microsoftonline.com/{tenant-id}
    graph_url: str = "https://graph.microsoft.com/v1.0"
    graph_tenant_id: str | None = None
    graph_client_id: str | None = None
    graph_client_secret: SecretStr | None = None
    graph_scope: str = "https://graph.microsoft.com/.default"

    # --- Salesforce (My Domain URL + connected app with client credentials)
    sf_url: str | None = None  # https://acme.my.salesforce.com
    sf_client_id: str | None = None
    sf_client_secret: SecretStr | None = None
    sf_api_version: str = "62.0"
    sf_timeout_s: float = Field(default=30.0, gt=0)

    # --- Mapping (Entra -> Salesforce rules, see docs/mapping.md). None: examples/mapping.yaml in sandbox mode.
    mapping_file: Path | None = None

    # --- TLS: an explicit CA bundle that REQUESTS_CA_BUNDLE & co. cannot override.
    ca_bundle: Path | None = None

    # --- Sandbox control (only in sandbox mode)
    sandbox_admin_url: str | None = None
    sandbox_admin_token: SecretStr | None = None

    # --- Webhook receiver
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8080, ge=0, le=65535)
    webhook_public_url: str | None = None  # what Graph posts to; default http://{host}:{port}
    webhook_client_state: SecretStr = SecretStr("change-me-client-state")
    webhook_max_body_bytes: int = Field(default=1_000_000, gt=0)

    # --- Producers
    delta_interval_s: float = Field(default=60.0, gt=0)
    # First start: False reads every user once and reconciles (one Graph and one Salesforce call per user on the
    # sync lane); True only records "now" and acts on changes from then on.
    delta_start_from_now: bool = False
    subscription_renew_before_s: float = Field(default=3600.0, gt=0)
    subscription_lifetime_min: int = Field(default=4230, gt=0, le=41760)

    # --- Workers, retries, DLQ
    task_time_limit_s: int = Field(default=300, gt=0)
    visibility_timeout_s: int = Field(default=3600, gt=0)
    max_retries: int = Field(default=8, ge=0)
    max_deliveries: int = Field(default=2, ge=1)  # a message that kills its worker this often is dead-lettered
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=120.0, gt=0)
    park_threshold_s: float = Field(default=120.0, gt=0)  # longer delays go to the parking zset, not countdowns
    dlq_max_entries: int = Field(default=10_000, gt=0)
    dlq_max_age_days: float = Field(default=30.0, gt=0)

    # --- Rate limits
    graph_requests_per_s: float = Field(default=50.0, gt=0)
    # Salesforce has no per-second limit (only a daily allowance and 25 concurrent long requests): this rate only
    # smooths bursts; the daily allowance is guarded by sf_sync_pause_share.
    sf_requests_per_s: float = Field(default=100.0, gt=0)
    revocation_reserved_share: float = Field(default=0.3, ge=0, lt=1)
    sf_sync_pause_share: float = Field(default=0.9, gt=0, le=1)

    # --- Flower
    flower_port: int = Field(default=5555, ge=0, le=65535)
    flower_user: str = "admin"
    flower_password: SecretStr | None = None

    # --- Logging and local state
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON unless stdout is a TTY
    var_dir: Path = Path("var")

    @model_validator(mode="after")
    def _tenant_all_or_nothing(self) -> Settings:
        graph = {
            "IDSYNC_GRAPH_AUTHORITY": self.graph_authority,
            "IDSYNC_GRAPH_TENANT_ID": self.graph_tenant_id,
            "IDSYNC_GRAPH_CLIENT_ID": self.graph_client_id,
            "IDSYNC_GRAPH_CLIENT_SECRET": self.graph_client_secret,
        }
        sf = {
            "IDSYNC_SF_URL": self.sf_url,
            "IDSYNC_SF_CLIENT_ID": self.sf_client_id,
            "IDSYNC_SF_CLIENT_SECRET": self.sf_client_secret,
        }
        for group in (graph, sf):
            given = [k for k, v in group.items() if v]
            if given and len(given) != len(group):
                missing = [k for k, v in group.items() if not v]
                raise ValueError(f"{missing[0]} is missing (set together with {given[0]})")
        if self.graph_authority and not self.graph_authority.startswith("https://"):
            raise ValueError("IDSYNC_GRAPH_AUTHORITY must be an https:// URL")
        if self.visibility_timeout_s <= max(self.task_time_limit_s, self.park_threshold_s, self.backoff_max_s):
            raise ValueError(
                "IDSYNC_VISIBILITY_TIMEOUT_S must exceed the task time limit, park threshold and max backoff"
            )
        return self

    @property
    def tenant_configured(self) -> bool:
        """True when a real (or sandbox-provided) tenant and org are configured."""
        return bool(self.graph_client_id and self.sf_client_id)

    @property
    def webhook_url(self) -> str:
        return self.webhook_public_url or f"http://{self.webhook_host}:{self.webhook_port}"


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    name = f"IDSYNC_{loc.upper()}" if loc else ""
    msg = first.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    return f"{name}: {msg}" if name else msg


def load_settings(**overrides: object) -> Settings:
    """Build settings or raise `SettingsError` with one line naming the bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None


class SettingsError(Exception):
    """A wrong or missing setting; its message is one line for the operator."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; a bad setting exits with one clear line instead of a traceback."""
    try:
        return load_settings()
    except SettingsError as err:
        print(f"idsync: invalid setting {err}", file=sys.stderr)
        raise SystemExit(2) from None
