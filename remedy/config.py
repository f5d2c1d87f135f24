"""`remedy.toml`, loaded with pydantic-settings.

Secrets never live in the file: it names environment variables (`*_env` keys) and
`secret()` reads them at the moment of use, so no token is held in a model that could
travel into a workflow input, a log line or a prompt.

One class per section of the file, so the module is the reference for
every key and runs past the usual length; the loading and error formatting are at the end.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from remedy.names import SERVICE_NAME_PATTERN, TASK_QUEUE
from remedy.service_policy import DEFAULT_TEST_PATHS, IncidentLimits, ServicePolicy, Severity

DEFAULT_CONFIG_PATH = Path("remedy.toml")


class ConfigError(Exception):
    """A configuration problem, phrased for the person who has to fix the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemporalConfig(_Section):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    index_task_queue: str | None = Field(
        default=None,
        description="A separate task queue for the CPU-heavy code index, served by "
        "`remedy worker --role index`; absent: the index runs on task_queue",
    )
    ui_url: str = "http://127.0.0.1:8233"
    profile: str | None = Field(
        default=None, description="temporal.toml profile (temporalio.envconfig) for real clusters"
    )
    api_key_env: str | None = Field(
        default=None, description="env var holding a Temporal Cloud key"
    )
    dev_ui_port: int = 8233
    dev_db: str = "temporal.sqlite"

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, profile: str | None) -> str | None:
        # Every process connects through it: a missing one is a config error at start-up,
        # not a traceback at the first Temporal call.
        if profile is None:
            return None
        from temporalio.envconfig import ClientConfig

        try:
            ClientConfig.load_client_connect_config(profile=profile)
        except RuntimeError as exc:  # the SDK's envconfig ConfigError
            raise ValueError(
                f"{exc} (profiles are read from TEMPORAL_CONFIG_FILE, else "
                "~/.config/temporalio/temporal.toml)"
            ) from None
        return profile


class IntakeConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = Field(default=262_144, ge=1024)
    max_json_depth: int = Field(
        default=64, ge=8, description="Bodies nested deeper get a 400 before they are parsed"
    )
    parse_workers: int = Field(
        default=2, ge=1, description="Processes that redact and parse large reports"
    )
    inline_parse_bytes: int = Field(
        default=8_192,
        ge=0,
        description="Reports up to this size are parsed on the event loop, where the hand-off "
        "to a parse worker would cost more than the work",
    )
    coalesce_interval_s: float = Field(
        default=0.5, gt=0, description="How long duplicate reports are gathered before one signal"
    )
    public_url: str | None = None
    max_envelope_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Sentry envelopes and OTLP requests, before and after Content-Encoding is "
        "undone; larger get 413 (a compressed bomb stops here)",
    )
    max_event_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="One Sentry event (Sentry's own 1 MB limit)"
    )


class WorkerConfig(_Section):
    max_concurrent_activities: int = Field(default=8, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=8, ge=1)
    graceful_shutdown_s: float = Field(default=10.0, ge=0)


class LimitsConfig(_Section, IncidentLimits):
    """[limits]: what each incident pins (IncidentLimits), and the worker's own limits."""

    sync_timeout_s: int = Field(default=600, ge=1)
    test_timeout_s: int = Field(default=600, ge=1, description="Wall clock per sandboxed test run")
    test_cpu_s: int = Field(default=600, ge=1, description="CPU seconds per sandboxed process")
    test_memory_mb: int = Field(
        default=4096, ge=64, description="Address space per sandboxed process (RLIMIT_AS)"
    )
    test_max_file_mb: int = Field(
        default=512, ge=1, description="Largest file a sandboxed test may write, its log included"
    )
    max_diagnoses_per_hour: int = Field(
        default=30, ge=1, description="Per service; beyond it incidents end rate_limited"
    )
    max_tokens_per_incident: int = Field(
        default=400_000, ge=1_000, description="LLM tokens (in + out); beyond it: rate_limited"
    )


class SandboxConfig(_Section):
    """The bubblewrap sandbox of verification runs (docs/sandbox.md)."""

    allow_unsandboxed: bool = Field(
        default=False,
        description="Where bubblewrap cannot run, run the tests anyway with only a network "
        "namespace, a scrubbed environment and rlimits (the summary says so); false: skipped",
    )
    max_processes: int = Field(
        default=256, ge=16, description="Processes and threads per test run (RLIMIT_NPROC)"
    )
    tmpfs_mb: int = Field(
        default=256, ge=16, description="Size of each in-memory folder of a run (/tmp, HOME)"
    )
    run_as_uid: int = Field(
        default=65534, ge=1, description="A worker running as root starts the sandbox as this user"
    )
    run_as_gid: int = Field(default=65534, ge=1)
    read_only_paths: list[str] = Field(
        default_factory=list,
        description="More host folders the tests may read (toolchains); the worker's Python and "
        "the installation of the test command's program are shown without being listed",
    )
    parallel_runs: int = Field(
        default=4,
        ge=1,
        description="Test runs a worker starts at once (suite and regression test, before and "
        "after), at most as many as it has CPUs",
    )
    reuse_runs: bool = Field(
        default=True,
        description="Reuse a finished sandboxed run with the same tree, command and environment "
        "(the suite before the patch, on the next incident at that commit); false: always run",
    )


class PolicyConfig(_Section):
    default_severity: Severity = Severity.HIGH
    notify_only_below: Severity = Field(
        default=Severity.MEDIUM,
        description="Incidents less severe than this are notified, not investigated",
    )


class ModelPrice(_Section):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    # A key prices that model and its dated snapshots (claude-sonnet-4-5-20250929); a model
    # not listed has no estimate rather than a neighbour's.
    table = {
        "claude-opus-4-0": (15.0, 75.0),
        "claude-opus-4": (15.0, 75.0),
        "claude-opus-4-1": (15.0, 75.0),
        "claude-opus-4-5": (5.0, 25.0),
        "claude-sonnet-4-0": (3.0, 15.0),
        "claude-sonnet-4": (3.0, 15.0),
        "claude-sonnet-4-5": (3.0, 15.0),
        "claude-sonnet-4-6": (3.0, 15.0),
        "claude-haiku-4-5": (1.0, 5.0),
    }
    return {name: ModelPrice(input_per_mtok=i, output_per_mtok=o) for name, (i, o) in table.items()}


class LLMConfig(_Section):
    mode: Literal["local", "claude", "auto", "none"] = "auto"
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen2.5-coder:7b"
    anthropic_api_key_env: str = "ANTHROPIC_API_KEY"
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_model: str = "claude-sonnet-4-6"
    fallback: bool = Field(
        default=True,
        description="A backend that is down falls back to the other one, also for `local` and "
        "`claude` services (false keeps a `local` service's code off the cloud)",
    )
    claude_first_severities: list[Severity] = Field(
        default_factory=lambda: [Severity.CRITICAL],
        description="auto: incidents this severe go to Claude first",
    )
    claude_first_min_files: int = Field(
        default=3,
        ge=1,
        description="auto: a stack across this many in-app files goes to Claude first",
    )
    escalate_below_confidence: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="auto: a local answer less confident than this escalates",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Answers per backend; each rejected one is fed back with the reason",
    )
    max_tool_iterations: int = Field(
        default=8, ge=0, description="Model turns that may call repository tools, per diagnosis"
    )
    max_output_tokens: int = Field(default=4096, ge=256)
    temperature: float = Field(default=0.0, ge=0, le=2)
    request_timeout_s: float = Field(default=300.0, gt=0)
    max_prompt_chars: int = Field(
        default=60_000,
        ge=4_000,
        description="The first prompt's size for Claude; for Ollama also no more than "
        "ollama_num_ctx leaves (prompt_chars)",
    )
    ollama_num_ctx: int = Field(
        default=16_384,
        ge=2_048,
        description="Ollama's context window in tokens, sent with every request: without it "
        "Ollama uses its own smaller default and silently drops the start of a long "
        "conversation. The Ollama prompt budget and conversation size derive from it",
    )
    ollama_native_tools: bool = Field(
        default=True,
        description="Offer Ollama's model the tools as function calls; a model that answers in "
        "text instead is moved to JSON actions on its first conversation. false: JSON actions "
        "from the first turn, for models known not to call tools",
    )
    max_tool_result_chars: int = Field(default=8_000, ge=500)
    cache: bool = Field(
        default=True, description="Answer identical prompts from the artifact store"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices,
        description="US dollars per model and its dated snapshots; unlisted local models are free",
    )

    def ollama_context_chars(self) -> int:
        """Characters of conversation that fit Ollama's window beside the answer.

        About 3.5 characters per token for code and English prose under the models' tokenizers.
        """
        answer = min(self.max_output_tokens, self.ollama_num_ctx // 2)
        return int((self.ollama_num_ctx - answer) * 3.5)

    def prompt_chars(self, backends: tuple[str, ...]) -> int:
        """The first prompt's budget when any of `backends` may answer it.

        For Ollama, half of what its window holds: the system prompt, the tools and the
        investigation's tool results need the other half.
        """
        budget = self.max_prompt_chars
        if "ollama" in backends:
            budget = min(budget, max(self.ollama_context_chars() // 2, 4_000))
        return budget


class SlackConfig(_Section):
    bot_token_env: str = "SLACK_BOT_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    app_token_env: str = "SLACK_APP_TOKEN"
    api_url: str = "https://slack.com/api/"
    socket_mode: bool = False


class GitHubConfig(_Section):
    token_env: str = "GITHUB_TOKEN"
    api_url: str = "https://api.github.com"
    app_id: str | None = Field(
        default=None, description="A GitHub App instead of a token (used when token_env is unset)"
    )
    app_private_key_env: str = Field(
        default="GITHUB_APP_PRIVATE_KEY", description="env var holding the App's PEM private key"
    )
    app_installation_id: int | None = Field(
        default=None, description="absent: the App's installation on the service's repository"
    )
    draft: bool = True
    labels: list[str] = Field(default_factory=lambda: ["remedy"])
    issue_severities: list[Severity] = Field(
        default_factory=lambda: [Severity.CRITICAL],
        description="Incidents of these severities also get one GitHub issue per fingerprint",
    )
    issue_labels: list[str] = Field(default_factory=lambda: ["remedy", "incident"])
    write_interval_s: float = Field(
        default=1.0, ge=0, description="Pause between writes, as GitHub asks of integrations"
    )
    timeout_s: int = Field(default=15, ge=1)
    webhook_secret_env: str = Field(
        default="GITHUB_WEBHOOK_SECRET",
        description="env var holding the secret of the repositories' webhook (POST "
        "/github/webhook verifies X-Hub-Signature-256 with it); unset: the route answers 503",
    )
    webhook_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Webhook deliveries larger than this get 413 (a pull request event is "
        "tens of KB)",
    )


class ArtifactsConfig(_Section):
    dir: str = "artifacts"


# -- code index (issue 3 owns these two sections) -------------------------------------


class QdrantConfig(_Section):
    url: str | None = Field(
        default=None, description="A Qdrant server; absent: embedded under home"
    )
    api_key_env: str | None = None
    path: str = Field(default="index", description="The embedded store's folder, under home")
    collection_prefix: str = Field(default="remedy", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    keep_commits: int = Field(
        default=8, ge=1, description="Commits per repository the index answers for; older purge"
    )
    max_file_bytes: int = Field(default=512 * 1024, ge=1024, description="Larger files skip")
    timeout_s: float = Field(default=30.0, gt=0, description="Per request to a Qdrant server")
    keep_open_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="How long a worker keeps the store open after its last use, so incidents "
        "in a row skip reopening it; another process waits at most this long once the "
        "worker is idle (0: close after every activity)",
    )


class EmbeddingsConfig(_Section):
    model: str | None = Field(
        default=None, description="sentence-transformers name or path; absent: packaged MiniLM"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="'auto': bfloat16 where the CPU computes it natively (AVX512-BF16, AMX), "
        "else float32",
    )
    batch_size: int = Field(default=32, ge=1, le=1024)


# -- log watcher (issue 6 owns this section) ------------------------------------------


class WatchConfig(_Section):
    state_file: str = "watch-state.json"
    poll_interval_s: float = Field(default=0.5, gt=0)
    start_at: Literal["end", "beginning"] = Field(
        default="end",
        description="Where to begin a log file that already exists when `remedy watch` first "
        "sees it; files that appear later (rotation, new logs) are always read from the start",
    )
    traceback_flush_s: float = Field(
        default=1.0,
        gt=0,
        description="How long a finished-looking plain traceback waits for a chained one",
    )
    max_record_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        description="Longer lines or tracebacks are skipped (or cut), so memory stays bounded",
    )
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)


# -- encrypted history (issue 11 owns this section) ----------------------------------


class CodecConfig(_Section):
    """Payload encryption (remedy/codec.py, docs/codec.md). The keys are only named here."""

    enabled: bool = Field(
        default=False,
        description="Encrypt every payload in Temporal's history (AES-256-GCM); histories "
        "written before stay readable",
    )
    keys_env: str = Field(
        default="REMEDY_CODEC_KEYS",
        description="env var holding 'id:base64key,id:base64key': the first encrypts, all decrypt",
    )
    server_host: str = Field(
        default="127.0.0.1",
        description="Where `remedy codec-server` listens; other than loopback only with a token",
    )
    server_port: int = Field(default=8081, ge=1, le=65535)
    server_token_env: str = Field(
        default="REMEDY_CODEC_SERVER_TOKEN",
        description="env var holding the bearer token the codec server asks for; unset: no "
        "token, and the server listens on loopback only",
    )
    cors_origins: list[str] | None = Field(
        default=None,
        description="Browser origins (the Temporal UI) allowed to call the codec server; "
        "absent: [temporal] ui_url and the dev UI on 127.0.0.1 and localhost",
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _keys_readable(self) -> CodecConfig:
        # Checked at start-up, so a bad key is one line before anything connects; read again
        # (never kept) when the data converter is built.
        if self.enabled:
            from remedy.codec import CodecKeyError, keys_from_environment

            try:
                keys_from_environment(self.keys_env)
            except CodecKeyError as exc:
                raise PydanticCustomError("codec_keys", str(exc)) from None
        return self


class MetricsConfig(_Section):
    """Prometheus text: Remedy's own counters (remedy.metrics) and the Temporal SDK's."""

    host: str = Field(default="127.0.0.1", description="Where the metrics ports listen")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="A worker's endpoint for Remedy's counters; the intake serves them at "
        "GET /metrics on its own port; absent: a worker serves none",
    )
    temporal_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The Temporal SDK's runtime metrics (pollers, task slots, latencies) of "
        "every process that connects; absent: none",
    )


class TracingConfig(_Section):
    enabled: bool = Field(
        default=False,
        description="OpenTelemetry spans for intake, workflow and activities, one trace per "
        "incident, sent over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT",
    )


class ServiceConfig(_Section):
    repo: str = Field(description="git URL, file:// URL or local path")
    branch: str = "main"
    deployed_commit: Literal["event", "branch"] = Field(
        default="event",
        description="'event': the event's release commit (branch head if absent); "
        "'branch': always the branch head",
    )
    intake_token_env: str | None = None
    sentry_public_key_env: str | None = Field(
        default=None,
        description="env var holding the key of the service's Sentry DSN (`remedy dsn`); absent: "
        "a key derived from the intake token",
    )
    sentry_project_id: int | None = Field(
        default=None, ge=1, description="The DSN's project id; absent: one derived from the name"
    )
    slack_channel: str | None = None
    approvers: list[str] = Field(default_factory=list)
    cli_approval: bool = Field(
        default=True, description="false: approvals only through Slack, never `remedy approve`"
    )
    cli_approvers: dict[str, str] = Field(
        default_factory=dict,
        description="approver -> hash of the credential `remedy approve` reads from "
        "REMEDY_APPROVER_TOKEN (`remedy approver-hash APPROVER` prints the line)",
    )
    allowed_paths: list[str] = Field(default_factory=lambda: ["**"])
    forbidden_paths: list[str] = Field(default_factory=list)
    allow_execution_sensitive_paths: list[str] = Field(
        default_factory=list,
        description="Execution-sensitive files (CI, build hooks, keys) the model may edit anyway",
    )
    test_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TEST_PATHS),
        description="Where the model's regression test may be written",
    )
    test_command: str | None = None
    github_repo: str | None = None
    llm: Literal["local", "claude", "auto", "none"] | None = None
    in_app_include: list[str] = Field(
        default_factory=list, description="Module/path prefixes that are the service's own code"
    )
    log_paths: list[str] = Field(
        default_factory=list, description="JSON/plain log files `remedy watch` tails for errors"
    )

    @field_validator("repo")
    @classmethod
    def _repo_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a git URL, file:// URL or local path")
        return value


class RemedyConfig(BaseSettings):
    """The whole file. Non-secret settings may be overridden from the environment
    (`REMEDY_INTAKE__PORT=9090`); secrets are only ever *named* here."""

    model_config = SettingsConfigDict(
        env_prefix="REMEDY_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # README: the environment overrides remedy.toml, key by key; values passed in code
        # (tests, benchmarks) override both.
        file_values = InitSettingsSource(settings_cls, init_kwargs=_file_values.get() or {})
        return init_settings, env_settings, file_values

    home: str = Field(default=".remedy", description="State directory, relative to this file")
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    github: GitHubConfig = Field(default_factory=GitHubConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    qdrant: QdrantConfig = Field(default_factory=QdrantConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    codec: CodecConfig = Field(default_factory=CodecConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    # Where the file was read from; relative paths in it resolve against its folder.
    _source: str = PrivateAttr(default="")

    @field_validator("services")
    @classmethod
    def _service_names(cls, services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        for name in services:
            if not re.match(SERVICE_NAME_PATTERN, name):
                raise ValueError(
                    f"service name {name!r} must be lower-case letters, digits, '-' or '_'"
                )
        return services

    # -- paths ----------------------------------------------------------------

    @property
    def source(self) -> str:
        return self._source

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    @property
    def home_dir(self) -> Path:
        return self.resolve(self.home)

    @property
    def artifacts_dir(self) -> Path:
        candidate = Path(self.artifacts.dir).expanduser()
        return candidate if candidate.is_absolute() else self.home_dir / candidate

    def repo_location(self, service: str) -> str:
        """A git URL stays as written; a local path resolves against the config file."""
        repo = self.service(service).repo
        if "://" in repo or repo.startswith("git@") or ":" in repo.split("/")[0]:
            return repo
        return str(self.resolve(repo))

    # -- services -------------------------------------------------------------

    def service(self, name: str) -> ServiceConfig:
        try:
            return self.services[name]
        except KeyError:
            raise ConfigError(
                f"{self.source or 'remedy.toml'}: no service {name!r} in [services]"
            ) from None

    def llm_mode(self, name: str) -> Literal["local", "claude", "auto", "none"]:
        """How the service's incidents are diagnosed: its own `llm`, else [llm] mode."""
        configured = self.services.get(name)
        return configured.llm if configured and configured.llm else self.llm.mode

    def service_policy(self, name: str) -> ServicePolicy:
        service = self.service(name)
        return ServicePolicy(
            approvers=list(service.approvers),
            allowed_paths=list(service.allowed_paths),
            forbidden_paths=list(service.forbidden_paths),
            allow_execution_sensitive_paths=list(service.allow_execution_sensitive_paths),
            test_paths=list(service.test_paths),
            **self.limits.model_dump(include=set(IncidentLimits.model_fields)),
        )


# remedy.toml's contents while load_config builds the model (the lowest settings source).
_file_values: ContextVar[dict[str, Any] | None] = ContextVar("remedy_file_values", default=None)


def secret(env_name: str | None) -> str | None:
    """Read a secret from the environment at the moment it is needed."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    return value or None


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(file)"
        message = item["msg"]
        env_name = "REMEDY_" + "__".join(str(part) for part in item["loc"]).upper()
        if env_name in os.environ:
            key = f"{key} (from {env_name}, which overrides the file)"
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against README's configuration table)"
        lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> RemedyConfig:
    """Read and validate remedy.toml; every problem becomes one ConfigError naming file and key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file "
            "(pass --config PATH, or copy remedy.toml from the repository)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    reading = _file_values.set(data)
    try:
        config = RemedyConfig()
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None
    finally:
        _file_values.reset(reading)
    config._source = str(path.resolve())
    return config
