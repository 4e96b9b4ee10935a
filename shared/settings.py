"""The one settings model. Every knob idsync has is a field here, read from `IDSYNC_*` variables, `.env` and the
files a running `idsync run` leaves in `var/` (precedence: shared/settings_sources.py).

Why one model: operators should find every setting in one place, and a typo must stop start-up with a line that
names the setting, not surface an hour later as a confusing runtime error.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from shared.settings_sources import ENV, ENV_PREFIX, EnvFileError, Layers, gather, is_setting_name

DEFAULT_CLIENT_STATE = "change-me-client-state"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
#: Hosts that serve every org's login page: Salesforce refuses the client-credentials flow there (the token request
#: must go to the org's own My Domain, which is how Salesforce knows which org's connected app is meant).
SF_SHARED_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
GRAPH_NAMES = (
    "IDSYNC_GRAPH_AUTHORITY", "IDSYNC_GRAPH_TENANT_ID", "IDSYNC_GRAPH_CLIENT_ID", "IDSYNC_GRAPH_CLIENT_SECRET",
)
SF_NAMES = ("IDSYNC_SF_URL", "IDSYNC_SF_CLIENT_ID", "IDSYNC_SF_CLIENT_SECRET")

#: The audit sinks `IDSYNC_AUDIT_SINKS` may name (one module each under shared/audit_sinks/).
AUDIT_SINK_NAMES = ("jsonl", "postgres", "salesforce", "syslog", "splunk_hec")


class Settings(BaseSettings):
    """Every knob. Build it with `load_settings()` (or `get_settings()`): the model itself reads no environment or
    file, so that every value has exactly one origin, decided by `shared.settings_sources` and shown by
    `idsync config`."""

    model_config = SettingsConfigDict(env_prefix="IDSYNC_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() passes the already layered values as keyword arguments; see shared/settings_sources.py.
        return (init_settings,)

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
    webhook_client_state: SecretStr = SecretStr(DEFAULT_CLIENT_STATE)
    webhook_max_body_bytes: int = Field(default=1_000_000, gt=0)
    # Prometheus /metrics of `idsync webhook`, on its own port so the public listener never serves it (0 = off).
    webhook_metrics_port: int = Field(default=9108, ge=0, le=65535)

    # --- Producers
    delta_interval_s: float = Field(default=60.0, gt=0)
    # First start: True records "now" and acts on every change from then on; the tenant as it stands is brought in
    # step by a reconciliation, which shows its plan before writing (`idsync reconcile --dry-run`, then `idsync
    # reconcile`, or the scheduled run). False pushes every user through the sync lane at once, without a plan.
    delta_start_from_now: bool = True
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
    # A deactivation Salesforce refuses (default lead owner, workflow user...) is tried again this often (the user
    # stays frozen meanwhile); `idsync review resolve ID --retry` tries at once.
    deactivation_retry_s: float = Field(default=900.0, gt=0)

    # --- Mass-deprovisioning guard (shared/deprovision_guard.py). More deactivations than this, in one reconcile run
    # or within the live window, are held (users frozen, not deactivated) until `idsync approve RUN_ID`. 0 disables
    # a threshold; both at 0 turn the guard off. The share threshold never holds fewer than guard_share_min_count.
    guard_max_count: int = Field(default=50, ge=0)
    guard_max_share: float = Field(default=0.05, ge=0, le=1)
    guard_share_min_count: int = Field(default=10, ge=0)
    guard_window_s: float = Field(default=900.0, gt=0)  # the live pipeline's sliding window
    guard_reject_keep_s: float = Field(default=86_400.0, gt=0)  # a rejected user stays frozen, not deactivated
    # --- Reconciliation (docs/reconciliation.md): a full comparison of Entra and Salesforce, planned by the engine
    # and applied in chunks on the sync lane; beat starts one every `reconcile_interval_s` (0 = never scheduled).
    reconcile_interval_s: float = Field(default=4 * 3600.0, ge=0)
    reconcile_chunk_size: int = Field(default=200, ge=1, le=200)  # users planned and written together
    reconcile_report_dir: Path | None = None  # where every run's report goes; default {var_dir}/reconcile
    reconcile_time_limit_s: int = Field(default=3000, gt=0)  # the `sync.reconcile` task's limit (capped below the
    # visibility timeout); a run cut short resumes at its next chunk
    # Salesforce reads of a run above this many rows (per query) go through one Bulk API 2.0 query job instead of
    # 2,000-row REST pages (0 = REST only); a job's results are read `reconcile_bulk_query_max_records` at a time.
    reconcile_bulk_query_threshold: int = Field(default=10_000, ge=0)
    # A write batch changing more Users than this updates them through one Bulk API 2.0 job instead of sObject
    # Collections (0 = collections only). Reconciliation writes `reconcile_write_chunk` users at a time once a run
    # has more than this many users to write; below it, `reconcile_chunk_size` at a time.
    bulk_write_threshold: int = Field(default=2000, ge=0)
    reconcile_write_chunk: int = Field(default=10_000, ge=200)
    reconcile_bulk_query_max_records: int = Field(default=50_000, ge=2000, le=1_000_000)

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
    def reconcile_reports(self) -> Path:
        return self.reconcile_report_dir or self.var_dir / "reconcile"

    @property
    def audit_trail_dir(self) -> Path:
        return self.audit_dir or self.var_dir / "audit"

    # --- Logging and local state
    log_level: LogLevel = "INFO"
    log_json: bool | None = None  # None: JSON unless stdout is a TTY
    var_dir: Path = Path("var")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tenant_all_or_nothing(self) -> Settings:
        # Per service only: tests and tools build Graph-only or Salesforce-only settings. A deployment needs both;
        # `deployment_problems` checks that for every process started from the CLI.
        for names in (GRAPH_NAMES, SF_NAMES):
            given = [n for n in names if self.value_of(n)]
            if given and len(given) != len(names):
                raise ValueError(_missing_line([n for n in names if n not in given], given))
        if self.graph_authority and not self.graph_authority.startswith("https://"):
            raise ValueError("IDSYNC_GRAPH_AUTHORITY must be an https:// URL")
        if self.visibility_timeout_s <= max(self.task_time_limit_s, self.park_threshold_s, self.backoff_max_s):
            raise ValueError(
                "IDSYNC_VISIBILITY_TIMEOUT_S must exceed the task time limit, park threshold and max backoff"
            )
        return self

    def value_of(self, name: str) -> Any:
        """The value of a setting by its variable name (`IDSYNC_SF_URL`)."""
        return getattr(self, name.removeprefix("IDSYNC_").lower())

    @property
    def tenant_configured(self) -> bool:
        """True when a real (or sandbox-provided) tenant and org are configured."""
        return bool(self.graph_client_id and self.sf_client_id)

    @property
    def sandbox_mode(self) -> bool:
        """True when the tenant is the bundled sandbox, which serves login, Graph and Salesforce from the origin of
        its control API. A stray IDSYNC_SANDBOX_ADMIN_URL next to a real tenant does not make it a sandbox."""
        if not (self.tenant_configured and self.sandbox_admin_url):
            return False
        home = _origin(self.sandbox_admin_url)
        return all(_origin(url) == home for url in (self.graph_authority, self.graph_url, self.sf_url) if url)

    @property
    def webhook_url(self) -> str:
        return self.webhook_public_url or f"http://{self.webhook_host}:{self.webhook_port}"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _missing_line(missing: list[str], given: list[str]) -> str:
    verb = "is" if len(missing) == 1 else "are"
    return f"{', '.join(missing)} {verb} missing (set together with {given[0]})"


# ---------------------------------------------------------------------------------------------- building settings
class SettingsError(ValueError):
    """A wrong or missing setting; its message is one line for the operator, starting with the setting's name."""

    hint = "fix it in the environment or .env (`idsync config` shows every value and where it comes from)"


class MalformedEnvFile(SettingsError):
    hint = "write it as NAME=value (quote a value holding spaces or #), or delete the line"


_LAYERED: Any = object()


def gather_layers(_env_file: Sequence[Path | str] | None = _LAYERED, **overrides: object) -> Layers:
    """The raw values and their origins; `_env_file` as in `load_settings`."""
    try:
        if _env_file is _LAYERED:
            return gather(given=overrides)
        return gather(env_files=_env_file, layered=False, given=overrides)
    except EnvFileError as err:
        raise MalformedEnvFile(str(err)) from None


def settings_from(layers: Layers, **overrides: object) -> Settings:
    values: dict[str, Any] = {}
    for name, sourced in layers.values.items():
        field = name.removeprefix(ENV_PREFIX).lower()
        if field in Settings.model_fields:
            values[field] = sourced.value
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None


def load_settings(_env_file: Sequence[Path | str] | None = _LAYERED, **overrides: object) -> Settings:
    """Build settings or raise `SettingsError` with one line naming the bad setting.

    By default values are layered as `shared.settings_sources` describes. `_env_file=None` reads the process
    environment only (tests); a sequence reads the environment plus exactly those files (`idsync run`, which must
    not inherit a previous run's files). Keyword overrides outrank everything.
    """
    return settings_from(gather_layers(_env_file, **overrides), **overrides)


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    name = f"IDSYNC_{loc.upper()}" if loc else ""
    msg = first.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    return f"{name}: {msg}" if name else msg


# ---------------------------------------------------------------------------------------------- deployment checks
def deployment_problems(settings: Settings) -> list[str]:
    """What stops this configuration from running safely, one line each; [] when it may start.

    A half-configured tenant must not fall back to the sandbox or mix with it. A real tenant must not run with the
    published default clientState (anyone could forge notifications), over plain http, or with Salesforce's shared
    login host (the client-credentials flow needs the org's My Domain).
    """
    explicit = settings.model_fields_set
    given = [n for n in (*GRAPH_NAMES, "IDSYNC_GRAPH_URL", *SF_NAMES)
             if n.removeprefix("IDSYNC_").lower() in explicit and settings.value_of(n)]
    missing = [n for n in (*GRAPH_NAMES, *SF_NAMES) if not settings.value_of(n)]
    problems: list[str] = []
    if settings.ca_bundle is not None and not Path(settings.ca_bundle).is_file():
        problems.append(f"IDSYNC_CA_BUNDLE: {settings.ca_bundle} is not a file")
    if given and missing:
        return [*problems, _missing_line(missing, given) + ": a tenant needs every IDSYNC_GRAPH_* and IDSYNC_SF_* "
                "credential (set none of them to run on the sandbox)"]
    if not settings.tenant_configured or settings.sandbox_mode:
        return problems
    if settings.webhook_client_state.get_secret_value() == DEFAULT_CLIENT_STATE:
        problems.append("IDSYNC_WEBHOOK_CLIENT_STATE: still the published default, so anyone could forge Graph "
                        "notifications; set a long random value (python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))')")
    for name in ("IDSYNC_GRAPH_AUTHORITY", "IDSYNC_GRAPH_URL", "IDSYNC_SF_URL", "IDSYNC_WEBHOOK_PUBLIC_URL"):
        url = settings.value_of(name)
        if not url:
            problems.append(f"{name} is missing: Graph sends change notifications only to a public https URL")
        elif urlsplit(url).scheme.lower() != "https":
            problems.append(f"{name}: must be an https:// URL with a real tenant (got {url.split(':', 1)[0]}://...)")
    sf_host = (urlsplit(settings.sf_url or "").hostname or "").lower()
    if sf_host in SF_SHARED_LOGIN_HOSTS:
        problems.append(f"IDSYNC_SF_URL: {sf_host} refuses the client-credentials flow; use the org's My Domain "
                        "URL (https://<name>.my.salesforce.com)")
    return problems


def unknown_name_warnings(layers: Layers) -> list[str]:
    """One line per `IDSYNC_*` name the operator wrote that is no setting, with the closest real one: a typo such as
    IDSYNC_WEBHOOK_CLIENTSTATE would otherwise silently leave the default in place."""
    known = [f"IDSYNC_{name.upper()}" for name in Settings.model_fields]
    lines: list[str] = []
    for written in layers.written:
        name = written.value
        if is_setting_name(name, known):
            continue
        where = "environment" if written.origin == ENV else written.origin
        # Compared without the shared prefix, which would make every name look alike.
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), [f.upper() for f in Settings.model_fields],
                                          n=1, cutoff=0.6)
        close_name = f"{ENV_PREFIX}{close[0]}" if close else ""
        advice = f"did you mean {close_name}?" if close else "`idsync config` lists every setting"
        lines.append(f"idsync: warning: {name} ({where}) is not a setting; {advice}")
    return lines


def load_checked_settings(_env_file: Sequence[Path | str] | None = _LAYERED, *, warn: TextIO | None = None
                          ) -> Settings:
    """Settings for a process that is about to do something: loaded, checked, typos warned about on stderr."""
    layers = gather_layers(_env_file)
    settings = settings_from(layers)
    for line in unknown_name_warnings(layers):
        print(line, file=warn or sys.stderr)
    problems = deployment_problems(settings)
    if problems:
        raise SettingsError(problems[0])
    return settings


def settings_error_line(err: SettingsError) -> str:
    """`idsync: invalid setting IDSYNC_X: ... — what to do`: the one line every entry point prints."""
    text = str(err)
    what = f"invalid setting {text}" if text.startswith(ENV_PREFIX) else text
    return f"idsync: {what} — {err.hint}"


@lru_cache(maxsize=1)
def checked_settings() -> Settings:
    """Process-wide settings (cached); raises `SettingsError`, which the CLI turns into one line."""
    return load_checked_settings()


def get_settings() -> Settings:
    """Process-wide settings for entry points outside the CLI (Celery signals, `python -m workers.scheduler`): a bad
    setting exits with one clear line instead of a traceback."""
    try:
        return checked_settings()
    except SettingsError as err:
        print(settings_error_line(err), file=sys.stderr)
        raise SystemExit(2) from None
