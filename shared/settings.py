"""The one settings model. Every knob idsync has is a field here, read from `IDSYNC_*` variables or `.env`.

Why one model: operators should find every setting in one place, and a typo must stop start-up with a line that
names the setting, not surface an hour later as a confusing runtime error.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The audit sinks `IDSYNC_AUDIT_SINKS` may name (one module each under shared/audit_sinks/).
AUDIT_SINK_NAMES = ("jsonl", "postgres", "salesforce", "syslog", "splunk_hec")


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

    # --- Audit trail and metrics. Workers append to a Redis stream; `idsync audit-writer` hash-chains
    # the entries and delivers them to every sink listed here. Metrics: one /metrics port per process type (0 = off).
    # Where the trail goes, several at once: "jsonl,postgres" (or a JSON list). jsonl, postgres, salesforce, syslog,
    # splunk_hec.
    audit_sinks: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["jsonl"])
    audit_dir: Path | None = None  # JSONL trail directory; default {var_dir}/audit
    audit_jsonl_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # rotate the JSONL file past this size
    audit_hmac_key: SecretStr | None = None  # signs checkpoints; unset: generated once into {var_dir}/audit.key
    audit_checkpoint_every: int = Field(default=1000, gt=0)  # a signed checkpoint after this many entries...
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0)  # ...or this long after the last, if any new
    audit_batch_size: int = Field(default=500, gt=0, le=10_000)
    audit_sink_backoff_max_s: float = Field(default=60.0, gt=0)
    audit_recent_keep: int = Field(default=100_000, ge=0)  # chained entries kept in the stream for `idsync status`
    audit_postgres_url: SecretStr | None = None  # postgresql://user:password@host:5432/db (a secret: it may hold one)
    audit_syslog_url: str | None = None  # tcp://host:514 or tls://host:6514 (RFC 5424, octet-counted framing)
    audit_syslog_facility: int = Field(default=13, ge=0, le=23)  # 13 = log audit
    audit_splunk_hec_url: str | None = None  # https://splunk:8088 (the /services/collector/event endpoint is added)
    audit_splunk_hec_token: SecretStr | None = None
    audit_splunk_hec_index: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_dir: Path | None = None  # PROMETHEUS_MULTIPROC_DIR parent for worker pools; default {var_dir}/prometheus
    metrics_port_worker_revocation: int = Field(default=9101, ge=0, le=65535)
    metrics_port_worker_sync: int = Field(default=9102, ge=0, le=65535)
    metrics_port_beat: int = Field(default=9103, ge=0, le=65535)
    metrics_port_poller: int = Field(default=9104, ge=0, le=65535)
    metrics_port_audit_writer: int = Field(default=9105, ge=0, le=65535)

    @field_validator("audit_sinks", mode="before")
    @classmethod
    def _sink_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _audit_sinks_configured(self) -> Settings:
        needs = {"postgres": ("IDSYNC_AUDIT_POSTGRES_URL", self.audit_postgres_url),
                 "syslog": ("IDSYNC_AUDIT_SYSLOG_URL", self.audit_syslog_url),
                 "splunk_hec": ("IDSYNC_AUDIT_SPLUNK_HEC_URL", self.audit_splunk_hec_url)}
        for sink in self.audit_sinks:
            if sink not in AUDIT_SINK_NAMES:
                raise ValueError(f"IDSYNC_AUDIT_SINKS: unknown sink {sink!r} (known: {', '.join(AUDIT_SINK_NAMES)})")
            name, value = needs.get(sink, ("", True))
            if not value:
                raise ValueError(f"{name} is missing (the {sink} audit sink is enabled)")
        if "splunk_hec" in self.audit_sinks and not self.audit_splunk_hec_token:
            raise ValueError("IDSYNC_AUDIT_SPLUNK_HEC_TOKEN is missing (the splunk_hec audit sink is enabled)")
        if self.audit_syslog_url and not self.audit_syslog_url.startswith(("tcp://", "tls://")):
            raise ValueError("IDSYNC_AUDIT_SYSLOG_URL must be tcp://host:port or tls://host:port")
        return self

    @property
    def audit_trail_dir(self) -> Path:
        return self.audit_dir or self.var_dir / "audit"

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
