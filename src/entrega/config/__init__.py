"""entrega.yaml: typed configuration, validated with pydantic.

The file is parsed with PyYAML into plain data while a map from each value's path
(``("environments", 1, "router", "listen")``) to its line is kept, so a validation error
can name the file, the line and the field, and say what was expected. Paths in the
config (artifacts, state) are relative to the config file's directory.

One module per part that stands on its own: ``model.py`` (the base every section shares),
``metrics.py`` (how a metric of an analysis is measured and judged, and the built-in
ones), ``ssh.py`` (a fleet target), ``strategy.py`` (canary, blue-green, rolling); the
rest of the file's sections and the loading are here.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from entrega.config.metrics import DEFAULT_ANALYSIS as DEFAULT_ANALYSIS
from entrega.config.metrics import DEFAULT_METRICS as DEFAULT_METRICS
from entrega.config.metrics import ROUTER_MEASURES
from entrega.config.metrics import HttpSource as HttpSource
from entrega.config.metrics import MetricConfig as MetricConfig
from entrega.config.metrics import PrometheusSource as PrometheusSource
from entrega.config.model import Model as _Model
from entrega.config.ssh import SshHostConfig as SshHostConfig
from entrega.config.ssh import SshTargetConfig as SshTargetConfig
from entrega.config.strategy import AnalysisStepConfig as AnalysisStepConfig
from entrega.config.strategy import BlueGreenConfig as BlueGreenConfig
from entrega.config.strategy import CanaryConfig as CanaryConfig
from entrega.config.strategy import CanaryStepConfig as CanaryStepConfig
from entrega.config.strategy import CohortConfig as CohortConfig
from entrega.config.strategy import PauseStepConfig as PauseStepConfig
from entrega.config.strategy import RollingConfig as RollingConfig
from entrega.config.strategy import StrategyConfig as StrategyConfig
from entrega.errors import ConfigError
from entrega.names import NAME_PATTERN
from entrega.net import parse_address

CONFIG_FILE = "entrega.yaml"
_NAME = re.compile(NAME_PATTERN)  # the one rule for app and environment names
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT_RANGE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")




def _address(value: str) -> str:
    parse_address(value)  # raises ValueError with "expected HOST:PORT"
    return value


class HealthConfig(_Model):
    path: str = "/healthz"
    #: Probing twice a second notices a dead instance within ~1.5 s at the default thresholds.
    interval_s: float = Field(0.5, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    #: Consecutive successes before an instance takes traffic: one success proves little.
    healthy_threshold: int = Field(3, ge=1)
    unhealthy_threshold: int = Field(3, ge=1)
    #: An app that exits this many times before it was first healthy fails its release at
    #: once, with its exit code and stderr, instead of after the progress deadline
    #: (0: wait for the deadline).
    max_start_exits: int = Field(5, ge=0)


class RunConfig(_Model):
    """How to run one instance of the app (local and ssh targets)."""

    #: A shell line run in the release's directory. Required wherever instances run as
    #: processes; a container (ssh ``runtime: podman``) runs its image's own command.
    command: str = ""
    #: Variables the app gets, on top of PATH, HOME, LANG, PORT and the ENTREGA_* ones.
    env: dict[str, str] = {}
    #: Names of the controller's variables the app also gets. Nothing else of the
    #: controller's environment reaches an instance: it holds the webhook secret.
    inherit_env: list[str] = []
    health: HealthConfig = HealthConfig()
    #: Seconds an instance may take to finish in-flight requests after SIGTERM.
    drain_s: float = Field(10.0, ge=0)

    @field_validator("env", "inherit_env")
    @classmethod
    def _variable_names(cls, value: Any) -> Any:
        for name in value:
            if not _VARIABLE.match(name):
                raise ValueError(f"{name!r} is not an environment variable name "
                                 "(letters, digits and '_', not starting with a digit)")
        return value


class LocalTargetConfig(_Model):
    kind: Literal["local"] = "local"
    instances: int = Field(1, ge=1, le=64)
    host: str = "127.0.0.1"
    #: Ports the instances may use, "LOW-HIGH" (inclusive), e.g. "20000-20999" for a
    #: firewall rule; default: any free port the kernel picks.
    ports: str | None = None

    @field_validator("ports")
    @classmethod
    def _port_range(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            low, high = parse_port_range(value)
            # A rollout runs the old and the new release side by side.
            needed = 2 * info.data.get("instances", 1)
            if high - low + 1 < needed:
                raise ValueError(
                    f"{value} holds {high - low + 1} port(s); {needed // 2} instance(s) need "
                    f"{needed}, as a rollout runs the old and the new release side by side")
        return value

    @property
    def port_range(self) -> tuple[int, int] | None:
        return parse_port_range(self.ports) if self.ports is not None else None


def parse_port_range(text: str) -> tuple[int, int]:
    """``"20000-20999"`` -> (20000, 20999). Raises ValueError saying what is expected."""
    match = _PORT_RANGE.match(text)
    if not match:
        raise ValueError(f"expected a port range LOW-HIGH like \"20000-20999\", got {text!r}")
    low, high = int(match[1]), int(match[2])
    if not 1 <= low <= 65535 or not 1 <= high <= 65535:
        raise ValueError(f"ports go from 1 to 65535, got {text!r}")
    if low > high:
        raise ValueError(f"the range {text!r} starts above its end")
    return low, high


TargetConfig = Annotated[LocalTargetConfig | SshTargetConfig, Field(discriminator="kind")]


class EmbeddedRouterConfig(_Model):
    kind: Literal["embedded"] = "embedded"
    listen: str
    #: Where a blue-green preview (the new release alone) is served before the switch.
    preview_listen: str | None = None
    #: Where the router serves Prometheus metrics per release (/metrics); off if unset.
    metrics_listen: str | None = None
    #: Forward ``/.entrega/*`` (the feedback widget and endpoint) to entrega's server, so
    #: a page needs no second host. Default: the server's own address; "" turns it off.
    control_plane_url: str | None = None
    #: Worker processes sharing ``listen`` (SO_REUSEPORT) under the router's supervisor,
    #: which replaces a dead one at once; one route table, summed metrics. One worker
    #: already serves tens of thousands of requests a second on one core; more are for
    #: hosts where that core is the limit.
    workers: int = Field(1, ge=1, le=64)
    #: Where the router runs. ``front``: one router, on the controller's machine (before
    #: a fleet, it is the one door). ``every_host`` (an ``ssh`` target only): a router on
    #: every host, behind your own load balancer, all set to the same table in lockstep;
    #: each listens on its host's own address at the port of ``listen`` (and of
    #: ``preview_listen``, ``metrics_listen``), and their metrics are summed per release.
    placement: Literal["front", "every_host"] = "front"

    _check_listen = field_validator("listen", "preview_listen", "metrics_listen")(
        lambda v: v if v is None else _address(v)
    )


class HaproxyRouterConfig(_Model):
    """HAProxy from the distribution, driven through its runtime API (routers/haproxy)."""

    kind: Literal["haproxy"] = "haproxy"
    listen: str
    preview_listen: str | None = None
    #: the admin runtime socket; default ``<state>/routers/<app>-<env>/haproxy.sock``
    runtime_socket: str | None = None
    #: HOST:PORT serving HAProxy's Prometheus exporter (/metrics) and stats page (/stats)
    stats_listen: str | None = None
    #: the haproxy executable (PATH lookup by default; Debian's 2.6 or newer is needed;
    #: on every host: on each host, where PATH and then /usr/sbin are searched)
    binary: str = "haproxy"
    #: Where HAProxy runs. ``front``: one, on the controller's machine. ``every_host`` (an
    #: ``ssh`` target only): one on every host, kept by the host agent, behind your own
    #: load balancer, all set to the same table in lockstep through their runtime sockets
    #: (over SSH); each listens on its host's own address at the port of ``listen`` (and
    #: of ``preview_listen``, ``stats_listen``), and their metrics are summed per release.
    placement: Literal["front", "every_host"] = "front"

    _check_listen = field_validator("listen", "preview_listen", "stats_listen")(
        lambda v: v if v is None else _address(v)
    )


RouterConfig = Annotated[EmbeddedRouterConfig | HaproxyRouterConfig, Field(discriminator="kind")]


class HttpCheck(_Model):
    path: str = "/"
    expect_status: int = Field(200, ge=100, le=599)
    expect_body: str | None = None
    #: How long the check may take to get the release's answer, retries of an unreachable
    #: release included (a router restart or a route being applied takes far less).
    timeout_s: float = Field(5.0, gt=0)


class VerifyStep(_Model):
    http: HttpCheck | None = None
    command: str | None = None
    timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> VerifyStep:
        if (self.http is None) == (self.command is None):
            raise ValueError("a verification is exactly one of http or command")
        return self




class EnvironmentConfig(_Model):
    name: str
    target: TargetConfig = LocalTargetConfig()
    router: RouterConfig
    strategy: StrategyConfig = StrategyConfig(
        canary=CanaryConfig(steps=[CanaryStepConfig(weight=100)])
    )
    analysis: dict[str, MetricConfig] = {}
    verify: list[VerifyStep] = []
    #: How a release that passed the previous environment enters this one: at once
    #: (automatic) or after `entrega approve` (manual). The first environment has no gate.
    gate: Literal["automatic", "manual"] = "automatic"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use lowercase letters, digits and '-' (like 'production')")
        return value

    @field_validator("router")
    @classmethod
    def _router_placement(cls, value: RouterConfig, info: ValidationInfo) -> RouterConfig:
        target = info.data.get("target")
        if value.placement == "every_host" and target is not None and target.kind != "ssh":
            raise ValueError(f"placement: every_host puts a router on every host of an "
                             f"ssh target; this environment's target is {target.kind}: "
                             "use placement: front (the default)")
        if isinstance(value, HaproxyRouterConfig) and value.placement == "every_host" \
                and value.runtime_socket is not None:
            raise ValueError("runtime_socket: with placement: every_host each host's "
                             "HAProxy keeps its runtime socket under the host agent's "
                             "state directory (reached over SSH); remove runtime_socket")
        return value

    @field_validator("analysis")
    @classmethod
    def _feedback_by_name(cls, value: dict[str, MetricConfig]) -> dict[str, MetricConfig]:
        # A builtin metric measures what its name says unless told: a ``feedback:`` entry
        # replaces the built-in one whole, judge included.
        cfg = value.get("feedback")
        if cfg is not None and cfg.provider == "builtin" and cfg.measure is None \
                and cfg.judge != "sequential":
            raise ValueError("metric feedback measures ratings, judged by judge: sequential "
                             f"(got judge: {cfg.judge})")
        for name, metric in value.items():
            measure = metric.measure or name
            if metric.app is not None and measure not in ROUTER_MEASURES:
                raise ValueError(
                    f"metric {name!r} names app {metric.app}, so it measures that app's "
                    f"router: measure: one of {', '.join(ROUTER_MEASURES)} (got {measure})")
        return value

    def metric(self, name: str) -> MetricConfig:
        return self.analysis.get(name) or DEFAULT_METRICS[name]


class TokenConfig(_Model):
    role: Literal["viewer", "deployer", "admin"]
    #: sha256 (hex) of the token; the token itself never goes in the file.
    #: `entrega token create NAME --role ROLE` makes one and prints this line.
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: The apps this token may see and act on (a server of several apps); None: all.
    apps: list[str] | None = None


class ArtifactSourcesConfig(_Model):
    """Where, besides uploaded bytes, an artifact may come from. Empty (the default): only
    uploads, so no request can make the server read its own files or fetch a URL."""

    #: Directories (relative to the config file) whose files and subdirectories a deployer
    #: or the signed webhook may name as an artifact. The state directory never qualifies.
    paths: list[str] = []
    #: URL prefixes (``https://artifacts.example/builds/``) the server may download an
    #: artifact from; scheme, host and port must match exactly, redirects are not followed.
    urls: list[str] = []

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/@]+(/|$)", url):
                raise ValueError(f"{url!r}: expected http(s)://HOST[:PORT]/PATH")
        return value


class AuthConfig(_Model):
    """API access. With no tokens, the API trusts every caller: only allowed while the
    server listens on loopback."""

    tokens: dict[str, TokenConfig] = {}
    #: Environment variable holding the CI webhook's HMAC-SHA256 secret.
    webhook_secret_env: str | None = None
    #: Largest request body (artifact uploads); bigger ones get 413.
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    #: Server-side paths and URLs an artifact may be taken from (off by default).
    artifact_sources: ArtifactSourcesConfig = ArtifactSourcesConfig()

    @field_validator("tokens")
    @classmethod
    def _token_names(cls, value: dict[str, TokenConfig]) -> dict[str, TokenConfig]:
        # A token's name is the actor of what it does, stored in 64 characters: PostgreSQL
        # refuses a longer one where SQLite would have kept it.
        for name in value:
            if not 1 <= len(name) <= 64:
                raise ValueError(f"token name {name[:20]!r}...: at most 64 characters")
        return value


class ArtifactsConfig(_Model):
    """Where release bytes live, and bounds on what one artifact may unpack to, checked
    from the tarball's headers before a byte is written, so a small compressed bomb is
    refused at once (413)."""

    #: Directory of the release bytes (``artifacts/<sha256>/``, ``releases/<app>/<version>``),
    #: relative to the config file. Default: the state directory, right for one server.
    #: Servers sharing one PostgreSQL store name one directory they all see (NFS, a shared
    #: volume) at the same path, so any of them can deploy a release another received.
    dir: str | None = None
    #: Total bytes of the unpacked files: 4x the default upload limit, room for a
    #: compressed build while a disk is not filled by one request.
    max_unpacked_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    #: Files, directories and links: a large node_modules tree has some tens of thousands.
    max_members: int = Field(100_000, ge=1)
    #: Unpacked bytes per compressed byte (the first MiB is free): builds compress 3-10x,
    #: a decompression bomb 1000x.
    max_compression_ratio: float = Field(100.0, ge=1)


class RetentionConfig(_Model):
    #: Releases kept restorable per environment (the newest ones it ran). Older artifacts
    #: are deleted; what an environment runs or could roll back to is never deleted.
    keep: int = Field(10, ge=1)


class WebhookNotify(_Model):
    url: str = Field(pattern=r"^https?://")
    #: Event kinds to send: release, verified, promoted, rolled_back, failed, ... or "*".
    events: list[str] = ["release", "verified", "promoted", "rolled_back", "failed"]
    timeout_s: float = Field(5.0, gt=0)
    #: Attempts before giving up; retried with exponential backoff from 1 s.
    max_attempts: int = Field(8, ge=1)


class NotifyConfig(_Model):
    webhook: WebhookNotify


class FeedbackConfig(_Model):
    """User feedback (POST /api/v1/feedback and /.entrega/feedback on the app's address)."""

    #: Largest accepted body; a rating with a long comment is well under 4 KiB.
    max_body_bytes: int = Field(8 * 1024, ge=256)
    #: Sustained submissions per client per minute; a person rates a release once or twice.
    rate_per_minute: float = Field(10.0, gt=0)
    #: Submissions a client may send at once before the rate applies.
    burst: int = Field(5, ge=1)
    #: Origins allowed to post across origins ("*": any, without credentials).
    cors_origins: list[str] = ["*"]
    #: Proxies in front of the server (addresses or networks) whose X-Forwarded-For is
    #: believed. None by default: being on loopback proves nothing, as any local process
    #: can connect from there. The embedded router is believed through its own key.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (like "
                                 "10.0.0.5 or 10.0.0.0/24)") from None
        return value


class InsightsConfig(_Model):
    #: How often each router's per-release counters are sampled into the store (for
    #: scorecards and their plots); a sample is written only when something changed.
    sample_interval_s: float = Field(5.0, gt=0)


class ServerConfig(_Model):
    listen: str = "127.0.0.1:7070"
    #: A client must send a whole request head within this time, or it is answered 408
    #: and cut off (slowloris); a real client sends its head in one packet.
    header_timeout_s: float = Field(10.0, gt=0)
    #: Servers sharing a PostgreSQL store: how long a leader that stopped answering (a
    #: pause, a cut network) keeps the lead before a standby takes it over. A dead
    #: leader's lead is free at once. Shorter: faster takeover after a pause; longer:
    #: a busy database or a GC pause does not cost a failover.
    lease_s: float = Field(3.0, ge=1.0, le=60.0)
    _check_listen = field_validator("listen")(_address)


#: The store URLs entrega runs on: SQLite (one server) and PostgreSQL through psycopg 3
#: (the `postgres` extra; a store several servers share).
STORE_URL_FORMS = ("sqlite:///PATH", "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE")
_STORE_URL = re.compile(r"^(sqlite:///|postgresql\+psycopg://)")


class StoreConfig(_Model):
    #: SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB.
    #: Default: SQLite in WAL mode at <state_dir>/state.db.
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _STORE_URL.match(value):
            raise ValueError(f"expected {' or '.join(STORE_URL_FORMS)}")
        return value


class Config(_Model):
    app: str
    run: RunConfig
    environments: list[EnvironmentConfig] = Field(min_length=1)
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    auth: AuthConfig = AuthConfig()
    retention: RetentionConfig = RetentionConfig()
    notify: list[NotifyConfig] = []
    feedback: FeedbackConfig = FeedbackConfig()
    insights: InsightsConfig = InsightsConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    #: Where entrega keeps its state, artifacts and logs (relative to the config file).
    state_dir: str = ".entrega"
    #: Apps of the same server this one calls: in a release group they pass each
    #: environment first (and go back last).
    depends_on: list[str] = []

    #: Directory of the config file (set by load_config; not part of the file).
    base_dir: Path = Field(default=Path("."), exclude=True)
    #: One of several apps of one file (config/apps.py): its API is /api/v1/apps/<app>.
    one_of_many: bool = Field(default=False, exclude=True)

    @field_validator("app")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use lowercase letters, digits and '-' (like 'shop-api')")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [e.name for e in self.environments]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"environment names must be unique, repeated: {sorted(dupes)}")
        host = parse_address(self.server.listen)[0]
        if not self.auth.tokens and host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the server listens on {host}, beyond loopback: "
                             "define auth.tokens (entrega token create NAME --role admin)")
        for env in self.environments:
            analyses = [step.analysis for step in
                        (env.strategy.canary.steps if env.strategy.canary else [])]
            if env.strategy.rolling is not None:
                analyses.append(env.strategy.rolling.analysis)
            for analysis in analyses:
                for metric in analysis.metrics if analysis else []:
                    if metric not in env.analysis and metric not in DEFAULT_METRICS:
                        raise ValueError(
                            f"environment {env.name!r}: analysis metric {metric!r} is not "
                            f"defined under analysis: (built in: {sorted(DEFAULT_METRICS)})"
                        )
        return self

    @model_validator(mode="after")
    def _secret_not_inherited(self) -> Config:
        secret = self.auth.webhook_secret_env
        if secret and secret in self.run.inherit_env:
            raise ValueError(f"run.inherit_env names {secret}, the webhook secret "
                             "(auth.webhook_secret_env): apps must not get it")
        return self

    @property
    def state_path(self) -> Path:
        return (self.base_dir / self.state_dir).resolve()

    @property
    def artifacts_path(self) -> Path:
        """Where release bytes live: ``artifacts.dir``, else the state directory."""
        if self.artifacts.dir is None:
            return self.state_path
        return (self.base_dir / self.artifacts.dir).resolve()

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_path / 'state.db'}"

    def environment(self, name: str) -> EnvironmentConfig:
        for env in self.environments:
            if env.name == name:
                return env
        raise ConfigError(
            f"no environment named {name!r}",
            hint=f"environments are {', '.join(e.name for e in self.environments)}",
        )


def config_schema() -> dict[str, Any]:
    """JSON Schema of entrega.yaml, for editors."""
    schema = Config.model_json_schema(by_alias=True)
    schema.get("properties", {}).pop("base_dir", None)
    return schema


# Reading and validating a file (with its lines) lives beside the model it fills; imported
# last, as it builds on everything above.
from entrega.config.loading import (  # noqa: E402
    load_config as load_config,
)
from entrega.config.loading import (  # noqa: E402
    read_config_text as read_config_text,
)
from entrega.config.loading import (  # noqa: E402
    validate_config as validate_config,
)
