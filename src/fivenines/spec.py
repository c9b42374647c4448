"""The one declarative model: ``fivenines.yaml`` loaded, validated and described.

(Why one module of over 1,000 lines: the model is a single tree of pydantic classes,
rooted at :class:`Spec`, whose cross-field checks read across sections; the JSON
Schema, ``docs/spec.md`` and every error's field path are derived from that one tree.
Splitting it by section would only add imports between the halves of one model.)

Names follow AWS Elastic Load Balancing (listener, target group, health check,
healthy/unhealthy threshold, matcher, deregistration delay) so that one file can
drive the local runtime and AWS alike.

Every problem is reported as a :class:`~fivenines.errors.FieldError` with the dotted
field path (``target_groups.web.health_check.timeout``) and what would be valid;
:func:`load_spec` raises one :class:`~fivenines.errors.SpecError` carrying all of them.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from fivenines.core.tls import DEFAULT_POLICY, policy
from fivenines.errors import FieldError, SpecError

# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Parse ``500ms``, ``1s``, ``2m``, ``1.5h``, ``30d`` or a bare number of seconds.

    >>> parse_duration("500ms"), parse_duration("2m"), parse_duration(3)
    (0.5, 120.0, 3.0)
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 1s, 2m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration; use e.g. 500ms, 1s, 2m, 1h")


def format_duration(seconds: float) -> str:
    """Render seconds the way a spec would write them.

    >>> format_duration(0.5), format_duration(1.0), format_duration(120), format_duration(1.25)
    ('500ms', '1s', '2m', '1250ms')
    """
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 500ms, 1s, 2m, 1h, 30d, or a number of seconds.",
        }
    ),
]


# --------------------------------------------------------------------------- sizes

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 1 << 20, "gb": 10**9, "gib": 1 << 30}


def parse_size(value: Any) -> int:
    """Parse ``64KiB``, ``1MB``, ``8192`` (bytes) into a number of bytes.

    >>> parse_size("64KiB"), parse_size("1MB"), parse_size(8192)
    (65536, 1000000, 8192)
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8KiB, 1MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise ValueError(f"{value!r} is not a size; use e.g. 8192, 64KiB, 10MB")


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+\s*(B|KB|KiB|MB|MiB|GB|GiB)?$"},
                {"type": "integer", "minimum": 0},
            ],
            "description": "A size in bytes: 8192, 64KiB, 10MB, 1GiB.",
        }
    ),
]


# --------------------------------------------------------------------------- matcher


def parse_matcher(text: str) -> tuple[tuple[int, int], ...]:
    """Parse an ELB matcher (``200``, ``200,302``, ``200-399``) into inclusive ranges.

    >>> parse_matcher("200-299,302")
    ((200, 299), (302, 302))
    """
    ranges: list[tuple[int, int]] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d{3})(?:\s*-\s*(\d{3}))?", part)
        if not m:
            raise ValueError(f"{text!r} is not a matcher; use e.g. 200, 200,302 or 200-399")
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if not (100 <= lo <= hi <= 599):
            raise ValueError(f"{part!r}: status codes must be 100-599 and low <= high")
        ranges.append((lo, hi))
    return tuple(ranges)


def matches(ranges: tuple[tuple[int, int], ...], status: int) -> bool:
    """True when ``status`` falls in one of the matcher ``ranges``."""
    return any(lo <= status <= hi for lo, hi in ranges)


# --------------------------------------------------------------------------- model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class AdminSpec(_Strict):
    listen: str = Field("127.0.0.1:9900", description="host:port of the admin API and dashboard.")
    token_file: str | None = Field(
        None, description="Bearer token file for mutating admin calls (default: in state_dir)."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        split_hostport(v)
        return v


class DetectorSpec(_Strict):
    """How check results become a verdict: consecutive counting, or phi accrual on heartbeats."""

    kind: Literal["threshold", "phi_accrual"] = Field(
        "threshold", description="threshold: unhealthy_threshold failed checks in a row; phi_accrual: suspicion from heartbeat timing."
    )
    phi_threshold: float = Field(8.0, gt=0, le=100, description="phi_accrual: suspect the target when phi reaches this.")
    window: int = Field(100, ge=2, le=10000, description="phi_accrual: heartbeat intervals remembered.")
    min_std_dev: Duration | None = Field(None, description="phi_accrual: floor of the interval spread (default: interval / 10).")
    acceptable_pause: Duration = Field(0.0, description="phi_accrual: added to the expected interval before suspecting.")


class AgentCheckSpec(_Strict):
    """The target reports its own state (HAProxy agent-check words): one line such as `75%`, `drain`, `up`, `down`.

    Give `port` for a HAProxy-style TCP agent on the target's host, or `path` to GET it
    over HTTP from the target's traffic port (the first line of the body).
    """

    port: int | None = Field(None, ge=1, le=65535, description="TCP port of the agent on the target's host.")
    path: str | None = Field(None, description="Or: HTTP path on the target that answers the agent line.")
    interval: Duration = Field(2.0, description="Time between agent queries.")
    send: str = Field("", description="TCP agent: text sent before reading the reply (a newline is added).")


class HealthCheckSpec(_Strict):
    protocol: Literal["http", "tcp", "command"] = Field(
        "http", description="http: request path and match status; tcp: connect; command: run it, exit status 0 passes."
    )
    path: str = Field("/health", description="Request path of HTTP checks.")
    port: int | None = Field(None, ge=1, le=65535, description="Check this port instead of the traffic port.")
    interval: Duration = Field(1.0, description="Time between checks of one target.")
    timeout: Duration = Field(0.5, description="Time without answer after which a check fails; below interval.")
    healthy_threshold: int = Field(2, ge=1, le=10, description="Consecutive passes to become healthy.")
    unhealthy_threshold: int = Field(2, ge=1, le=10, description="Consecutive failures to become unhealthy.")
    matcher: str = Field("200-399", description="Status codes that pass: 200, 200,302 or 200-399.")
    method: Literal["GET", "HEAD", "OPTIONS", "POST"] = Field("GET", description="Method of HTTP checks.")
    expect_body: str | None = Field(None, description="HTTP checks pass only when the body contains this text.")
    command: list[str] | None = Field(
        None, description="protocol command: argv run per check; {host}, {port}, {id} are substituted."
    )
    agent: AgentCheckSpec | None = Field(None, description="Optional agent the target reports its weight or drain through.")
    detector: DetectorSpec = Field(default_factory=DetectorSpec)
    startup_grace: Duration = Field(0.0, description="Failed checks of a just-started instance do not count for this long.")

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str) -> str:
        if not v.startswith("/") or any(c in v for c in " \r\n\t"):
            raise ValueError(f"{v!r} is not a request path; it must start with / and have no spaces")
        return v

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("interval must be greater than 0")
        return v

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, v: float, info: Any) -> float:
        if v <= 0:
            raise ValueError("timeout must be greater than 0")
        interval = info.data.get("interval")
        if interval is not None and v >= interval:
            raise ValueError(
                f"timeout ({format_duration(v)}) must be less than interval ({format_duration(interval)})"
            )
        return v

    @field_validator("matcher", mode="before")
    @classmethod
    def _check_matcher(cls, v: Any) -> str:
        parse_matcher(str(v))
        return str(v)

    @property
    def matcher_ranges(self) -> tuple[tuple[int, int], ...]:
        return parse_matcher(self.matcher)


class RestartSpec(_Strict):
    initial_delay: Duration = Field(0.5, description="First restart delay after a crash.")
    max_delay: Duration = Field(30.0, description="Cap of the exponential restart backoff.")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="Backoff growth per consecutive crash.")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="Random spread of each delay, as a fraction.")
    stable_after: Duration = Field(10.0, description="Uptime after which the backoff resets.")
    crash_loop_after: int = Field(5, ge=1, description="Consecutive short-lived runs that mark a crash loop.")


class LogsSpec(_Strict):
    """stdout/stderr files of each instance, rotated by size."""

    max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Rotate a log file when it would grow past this many bytes.")
    keep: int = Field(3, ge=0, le=100, description="Rotated files kept (ID.err.log.1 ... .N).")


# ---- reliability and SLO: inputs of `fivenines model` (fivenines.model.layout), nothing else reads them


def _positive_duration(v: float | None) -> float | None:
    if v is not None and v <= 0:
        raise ValueError("must be greater than 0")
    return v


class UnitReliabilitySpec(_Strict):
    """How often one unit fails and how long it takes to get it back."""

    mtbf: Duration | None = Field(
        None, description="Mean time between failures of one unit (default: 30d, and the output says so)."
    )
    mttr: Duration | None = Field(
        None,
        description="Mean time from a failure until the unit serves again (default for instances: "
        "detection + first restart delay + healthy_threshold x interval; for targets: 1h; "
        "for the load balancer: 1m).",
    )

    @field_validator("mtbf", "mttr")
    @classmethod
    def _check_positive(cls, v: float | None) -> float | None:
        return _positive_duration(v)


class ReliabilitySpec(UnitReliabilitySpec):
    """Failure and repair of a target group's members, for `fivenines model` (see docs/availability.md)."""

    repair_crews: int | None = Field(
        None, ge=1, description="Failed members repaired at the same time (default: unlimited, each on its own)."
    )
    standby_mode: Literal["hot", "warm", "cold"] = Field(
        "hot", description="hot: standbys fail like actives; warm: at standby_failure_ratio of that; cold: never while waiting."
    )
    standby_failure_ratio: float | None = Field(
        None, ge=0, le=1, description="warm only: a standby's failure rate as a share of an active's (default 0.5)."
    )
    coverage: float = Field(
        1.0, ge=0, le=1, description="Probability that a failure is handled automatically (ejected, standby promoted)."
    )
    manual_recovery: Duration = Field(
        3600.0, description="Mean time for a person to recover a failure that was not handled automatically."
    )
    common_cause_beta: float = Field(
        0.0, ge=0, le=1, description="Share of failures that hit every member at once (beta-factor)."
    )

    @field_validator("standby_failure_ratio")
    @classmethod
    def _check_ratio(cls, v: float | None, info: Any) -> float | None:
        mode = info.data.get("standby_mode")
        if v is not None and mode is not None and mode != "warm":
            raise ValueError(f"applies only to standby_mode: warm (standby_mode is {mode})")
        return v

    @field_validator("manual_recovery")
    @classmethod
    def _check_recovery(cls, v: float) -> float:
        _positive_duration(v)
        return v


class LoadSpec(_Strict):
    """A group's load profile, for `fivenines model`: how many instances the peak needs."""

    mean_rps: float = Field(gt=0, description="Mean requests per second to the group.")
    peak_rps: float = Field(gt=0, description="Peak requests per second to the group.")
    per_instance_rps: float = Field(gt=0, description="Requests per second one instance serves within its latency objective.")

    @field_validator("peak_rps")
    @classmethod
    def _check_peak(cls, v: float, info: Any) -> float:
        mean = info.data.get("mean_rps")
        if mean is not None and v < mean:
            raise ValueError(f"peak_rps ({v:g}) must be at least mean_rps ({mean:g})")
        return v


class LoadBalancerSpec(_Strict):
    """The load balancer itself, one unit in series with every target group (see docs/availability.md)."""

    reliability: UnitReliabilitySpec = Field(
        default_factory=UnitReliabilitySpec, description="Failure and repair of the load balancer itself."
    )


class SloSpec(_Strict):
    """A service level objective: the error budget and burn-rate alerts are computed against it."""

    target: float = Field(gt=0, lt=100, description="Percent of requests that must succeed, e.g. 99.9.")
    window: Duration = Field(30 * 86400.0, description="Rolling window of the objective (default 30d).")

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: float) -> float:
        _positive_duration(v)
        return v


def parse_port_range(text: str) -> tuple[int, int] | None:
    """``"9101-9199"`` → ``(9101, 9199)``; ``"9101"`` → ``(9101, 9101)``; ``"auto"`` → None.

    >>> parse_port_range("9101-9199"), parse_port_range("auto")
    ((9101, 9199), None)
    """
    if text == "auto":
        return None
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5}))?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a port range; use e.g. 9101-9199, or auto")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"{text!r}: ports must be 1-65535 and low <= high")
    return lo, hi


class InstancesSpec(_Strict):
    command: list[str] | str = Field(
        description="argv list; {port}, {id} and {host} (127.0.0.1, or in a cluster the node's address) are "
        "substituted. A string needs shell: true."
    )
    count: int = Field(1, ge=1, le=256, description="N: active instances that serve traffic.")
    standby: int = Field(0, ge=0, le=256, description="M: hot standbys, started and checked, serving only on loss.")
    ports: str = Field("auto", description="Port range for the instances (9101-9199), or auto.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    cwd: str | None = Field(None, description="Working directory (default: the spec file's folder).")
    shell: bool = Field(False, description="Run command through /bin/sh. Off unless written explicitly.")
    stop_timeout: Duration = Field(5.0, description="Time between SIGTERM and SIGKILL when stopping.")
    restart: RestartSpec = Field(default_factory=RestartSpec)
    logs: LogsSpec = Field(default_factory=lambda: LogsSpec())
    placement: Literal["spread"] | dict[str, int] = Field(
        "spread",
        description="In a cluster: spread (actives balanced over the nodes and zones, standbys on other nodes), "
        "or the number of actives on each node, e.g. {a: 2, b: 1} (standbys still go where actives are fewest).",
    )

    @field_validator("command")
    @classmethod
    def _check_command(cls, v: list[str] | str, info: Any) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("command must name a program, e.g. [python, -m, fivenines.demo, --port, '{port}']")
        if isinstance(v, str) and not v.strip():
            raise ValueError("command must not be empty")
        return v

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, v: str) -> str:
        parse_port_range(v)
        return v

    @property
    def total(self) -> int:
        return self.count + self.standby


Algorithm = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_outstanding_requests",
    "random",
    "ip_hash",
    "hash",
]


class WeightedTarget(_Strict):
    address: str = Field(description="host:port of the server.")
    weight: int = Field(1, ge=0, le=1000, description="Relative share for weighted_round_robin (0: no traffic).")

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        split_hostport(v)
        return v


class HashOnSpec(_Strict):
    """What the ``hash`` algorithm hashes (exactly one)."""

    header: str | None = Field(None, description="Hash this request header's value.")
    cookie: str | None = Field(None, description="Hash this cookie's value.")
    uri: bool = Field(False, description="Hash the request path and query.")


class StickinessSpec(_Strict):
    """Load-balancer cookie stickiness (ALB's lb_cookie)."""

    enabled: bool = Field(True, description="Send a client back to the target that served it first.")
    duration: Duration = Field(86400.0, description="Lifetime of the stickiness cookie (1s to 7d).")
    cookie_name: str = Field("FIVENINES_STICKY", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Cookie name.")


class RetriesSpec(_Strict):
    attempts: int = Field(2, ge=1, le=5, description="Tries in all, the first included.")
    per_try_timeout: Duration | None = Field(None, description="No response head within this: the try failed.")
    budget_percent: float = Field(20.0, ge=0, le=100, description="Retries at most this share of requests (per group).")


class LatencyOutlierSpec(_Strict):
    """Eject a target whose recent latency is far above its peers'."""

    factor: float = Field(5.0, gt=1, le=1000, description="Eject when its p90 exceeds this times the median of its peers' medians.")
    min_latency: Duration = Field(0.1, description="... and its p90 exceeds this (fast enough is fast enough).")
    window: Duration = Field(10.0, description="Latency samples younger than this are compared.")
    min_requests: int = Field(20, ge=1, le=100000, description="Samples a target needs in the window to be judged.")


class OutlierDetectionSpec(_Strict):
    """Passive health: outcomes of real traffic eject a target before any check notices."""

    enabled: bool = Field(True, description="Eject targets on the evidence of real traffic.")
    consecutive_errors: int = Field(1, ge=0, le=1000, description="Connect errors, resets or per-try timeouts in a row that eject (0: never).")
    consecutive_5xx: int = Field(3, ge=0, le=1000, description="5xx answers in a row that eject (0: never).")
    base_ejection_time: Duration = Field(10.0, description="The n-th ejection in a row lasts n times this ...")
    max_ejection_time: Duration = Field(300.0, description="... but at most this.")
    max_ejection_percent: float = Field(50.0, ge=0, le=100, description="At most this share of the group is ejected at once (at least one).")
    latency: LatencyOutlierSpec | None = Field(default_factory=LatencyOutlierSpec, description="Latency outlier ejection (null: off).")


class FailoverSpec(_Strict):
    """Hysteresis of N+M roles: no flapping between a recovered target and the standby that replaced it."""

    hold_time: Duration = Field(30.0, description="A recovered home target is reinstated (its standby demoted back) after being healthy this long.")
    flap_window: Duration = Field(300.0, description="Losses of a target within this window count as flaps ...")
    max_hold_down: Duration = Field(300.0, description="... each doubling its hold time, up to this.")


class HedgingSpec(_Strict):
    """Send a second copy of an idempotent request to another target after a delay; the first answer wins."""

    delay: Duration = Field(description="Send the hedge when no response head arrived within this.")


class ScalingPolicySpec(_Strict):
    """A target-tracking policy: one metric and its target per warm instance (give exactly one)."""

    requests_per_target: float | None = Field(None, gt=0, description="Requests per second per instance.")
    in_flight_per_target: float | None = Field(None, gt=0, description="Requests in flight per instance (mean over the window).")
    p99_latency: Duration | None = Field(None, description="99th percentile latency of the instances' responses.")
    cpu: float | None = Field(None, gt=0, le=6400, description="CPU of each instance process, in percent of one core.")

    @field_validator("p99_latency")
    @classmethod
    def _check_latency(cls, v: float | None) -> float | None:
        return _positive_duration(v)

    def metric(self) -> tuple[str, float] | None:
        given = [(k, v) for k, v in self.model_dump().items() if v is not None]
        return given[0] if len(given) == 1 else None


class ScalingSpec(_Strict):
    """Elastic scaling of the actives between min and max (docs/scaling.md); standbys stay as declared."""

    min: int = Field(ge=1, le=256, description="Fewest actives.")
    max: int = Field(ge=1, le=256, description="Most actives (standbys come on top).")
    policies: list[ScalingPolicySpec] = Field(
        default_factory=lambda: [ScalingPolicySpec(cpu=50.0)], min_length=1,
        description="Target tracking: out when any policy asks, in only when all agree (default: cpu 50).")
    evaluation_interval: Duration = Field(2.0, description="Time between two decisions.")
    scale_out_window: Duration = Field(6.0, description="The metrics are averaged over this (short: a spike shows within it).")
    scale_in_stabilization: Duration = Field(180.0, description="Scale in only to the highest count recommended over this.")
    max_step: int = Field(4, ge=1, le=256, description="Most instances added or removed by one decision.")
    tolerance: float = Field(0.1, ge=0, lt=1, description="No change while each metric is within this share of its target.")


# --------------------------------------------------------------------------- replicated stores


class CustomStoreSpec(_Strict):
    """Commands that let fivenines manage a store it has no built-in support for (kind: custom).

    Each is an argv list; ``{host}``, ``{port}`` and ``{id}`` name the target, and
    ``{primary_host}``/``{primary_port}`` the primary to follow."""

    role_command: list[str] = Field(
        min_length=1,
        description="Prints one line: 'primary POSITION' or 'replica POSITION [HOST:PORT]'; non-zero exit: unreachable.",
    )
    promote_command: list[str] = Field(min_length=1, description="Makes the target the primary; exit 0 on success.")
    follow_command: list[str] = Field(
        min_length=1, description="Makes the target a replica of {primary_host}:{primary_port}; exit 0 on success."
    )
    command_timeout: Duration = Field(10.0, description="Longest promote_command or follow_command may run.")


class ReadListenerSpec(_Strict):
    """A second TCP listener spreading connections over replicas within a lag bound (reads only)."""

    port: int = Field(ge=0, le=65535, description="Port to listen on (0: any free port).")
    host: str = Field("127.0.0.1", description="Address to bind.")
    max_lag: int = Field(1048576, ge=0, description="Replicas further behind the primary than this (position units) get no reads.")


class LeaseSpec(_Strict):
    """Several fivenines nodes managing one group: only the holder of this etcd lease acts and routes writes."""

    etcd: list[str] = Field(min_length=1, description="etcd client URLs, e.g. [http://127.0.0.1:2379].")
    ttl: Duration = Field(5.0, description="Lease time to live; the holder stops routing writes before it can expire.")
    prefix: str = Field("/fivenines", description="etcd key prefix; keys are PREFIX/NAME/GROUP/...")

    @field_validator("etcd")
    @classmethod
    def _check_endpoints(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.fullmatch(r"https?://[^/\s]+/?", url):
                raise ValueError(f"{url!r} is not an etcd client URL, e.g. http://127.0.0.1:2379")
        return v

    @field_validator("ttl")
    @classmethod
    def _check_ttl(cls, v: float) -> float:
        if v < 2:
            raise ValueError("ttl must be at least 2s (etcd's smallest lease)")
        return v


class RetentionSpec(_Strict):
    """Which backups to keep: the newest keep_last, plus the newest of each of the last daily days and weekly weeks."""

    keep_last: int = Field(7, ge=1, description="Keep the newest N verified backups (at least 1).")
    daily: int = Field(0, ge=0, description="Also keep the newest backup of each of the last N days (UTC) that have one.")
    weekly: int = Field(0, ge=0, description="Also keep the newest backup of each of the last N ISO weeks that have one.")


def _schedule(v: str | None) -> str | None:
    from fivenines.core.backup_schedule import parse_schedule

    if v is not None:
        parse_schedule(v)  # ScheduleError is a ValueError: reported with the field path
    return v


class BackupSpec(_Strict):
    """Scheduled, verified backups of a replicated store, taken from a replica (docs/backup.md)."""

    schedule: Annotated[str, AfterValidator(_schedule)] = Field(
        description="An interval (6h, every 30m) or a cron expression in UTC ('0 3 * * *', @daily).")
    to: str = Field(description="A local directory (relative to the spec file) or s3://bucket/prefix.")
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    point_in_time: bool = Field(False, description="Copy the replicas' AOF with timestamps (Redis 7 aof-timestamp-enabled): restorable to any second it covers. Needs instances.")
    drill: Annotated[str | None, AfterValidator(_schedule)] = Field(None, description="Schedule of restore drills into a scratch server (never the live group).")
    allow_primary: bool = Field(False, description="Copy from the primary when no replica is healthy (forks the process taking writes).")
    timeout: Duration = Field(600.0, description="Longest one backup (copy and verification) may take.")
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(None, description="S3 server-side encryption.")
    kms_key_id: str | None = Field(None, description="KMS key for aws:kms (default: the account's S3 key).")
    region: str | None = Field(None, description="S3 region (default: the boto3 chain's).")
    endpoint_url: str | None = Field(None, description="An S3-compatible endpoint; credentials come only from the standard boto3 chain.")

    @field_validator("to")
    @classmethod
    def _check_to(cls, v: str) -> str:
        if v.startswith("s3://") and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", v):
            raise ValueError(f"{v!r} is not s3://BUCKET/PREFIX (bucket: 3-63 lower-case letters, digits, dots, dashes)")
        if not v.strip():
            raise ValueError("give a directory or s3://bucket/prefix")
        return v


class ReplicatedSpec(_Strict):
    """The target group is a replicated store: one primary takes writes, the others replicate it."""

    kind: Literal["redis", "postgres", "custom"] = Field(description="redis (built in), postgres (not yet) or custom (commands).")
    durability: Literal["sync", "async"] = Field(
        "sync",
        description="sync: a write is acknowledged only once a replica has it; async: faster, a failover may lose the last writes.",
    )
    max_lag_on_failover: int = Field(
        1048576, ge=0, description="Never promote a replica further behind than this (bytes of replication position)."
    )
    read_listener: ReadListenerSpec | None = Field(None, description="Optional listener for reads from replicas.")
    lease: LeaseSpec | None = Field(None, description="Optional etcd lease for several fivenines nodes.")
    custom: CustomStoreSpec | None = Field(None, description="Commands, for kind custom.")
    backup: BackupSpec | None = Field(None, description="Optional scheduled backups, restores and drills (kind redis).")


class TargetGroupSpec(_Strict):
    algorithm: Algorithm = Field("round_robin", description="How requests are spread over serving targets.")
    hash_on: HashOnSpec | None = Field(None, description="For algorithm hash: what to hash.")
    instances: InstancesSpec | None = Field(None, description="Instances fivenines starts, watches and restarts.")
    targets: list[str | WeightedTarget] | None = Field(
        None, description="host:port (or {address, weight}) of servers fivenines only balances and checks."
    )
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec)
    retries: RetriesSpec = Field(default_factory=RetriesSpec)
    stickiness: StickinessSpec | None = Field(None, description="Optional load-balancer cookie stickiness.")
    deregistration_delay: Duration = Field(30.0, description="Longest a draining target may finish in-flight requests.")
    slow_start: Duration = Field(0.0, description="Ramp a joining target's share linearly over this time (0: off).")
    outlier_detection: OutlierDetectionSpec = Field(default_factory=OutlierDetectionSpec)
    failover: FailoverSpec = Field(default_factory=FailoverSpec)
    fail_open: Literal["route_all", "reject"] = Field(
        "route_all", description="No target healthy: route to all that failed checks (as ELB), or reject with 503 + Retry-After."
    )
    hedging: HedgingSpec | None = Field(None, description="Optional hedged requests (idempotent requests only).")
    replicated: ReplicatedSpec | None = Field(None, description="A replicated store: one primary, replicas, failover.")
    reliability: ReliabilitySpec | None = Field(None, description="Failure and repair rates, for fivenines model.")
    load: LoadSpec | None = Field(None, description="Load profile, for fivenines model (instances the peak needs).")
    scaling: ScalingSpec | None = Field(None, description="Elastic scaling of the actives (instances only).")

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str | WeightedTarget] | None) -> list[str | WeightedTarget] | None:
        if v is not None:
            if not v:
                raise ValueError("targets must list at least one host:port")
            for t in v:
                if isinstance(t, str):
                    split_hostport(t)
        return v

    def instance_slots(self) -> int:
        """Most instances the group may run at once: count (or scaling max) + standby."""
        inst = self.instances
        if inst is None:
            return 0
        return inst.total if self.scaling is None else max(inst.count, self.scaling.max) + inst.standby

    def target_list(self) -> list[WeightedTarget]:
        """``targets`` with plain strings turned into weight-1 entries."""
        return [WeightedTarget(address=t) if isinstance(t, str) else t for t in self.targets or []]


class RuleMatch(_Strict):
    """Conditions of a listener rule (ALB's); all given conditions must hold. Values are alternatives."""

    path: list[str] | None = Field(None, description="Path globs, e.g. /api/* (case-sensitive).")
    host: list[str] | None = Field(None, description="Host header globs, e.g. *.example.com (case-insensitive).")
    header: dict[str, list[str]] | None = Field(None, description="Header name to value globs.")
    method: list[str] | None = Field(None, description="Request methods, e.g. [GET, HEAD].")
    query: dict[str, str] | None = Field(None, description="Query parameter to value glob.")
    source_ip: list[str] | None = Field(None, description="Client address CIDRs, e.g. 10.0.0.0/8.")
    sni: list[str] | None = Field(None, description="tls listeners only: server name (SNI) globs, e.g. *.example.com (case-insensitive).")

    @field_validator("source_ip")
    @classmethod
    def _check_cidrs(cls, v: list[str] | None) -> list[str] | None:
        import ipaddress

        for c in v or []:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not a CIDR, e.g. 10.0.0.0/8 or 192.168.1.7/32") from None
        return v

    @field_validator("method")
    @classmethod
    def _check_methods(cls, v: list[str] | None) -> list[str] | None:
        for m in v or []:
            if not re.fullmatch(r"[A-Z][A-Z-]{0,39}", m):
                raise ValueError(f"{m!r} is not a method; use upper case, e.g. GET")
        return v


class ForwardSpec(_Strict):
    """Forward to one target group, or split by weight across several (a canary: {web: 90, canary: 10})."""

    target_groups: dict[str, int] = Field(min_length=1, description="Target group name to weight (0-999).")
    stickiness: Duration | None = Field(None, description="Keep a client on the group it was sent to this long.")

    @field_validator("target_groups")
    @classmethod
    def _check_weights(cls, v: dict[str, int]) -> dict[str, int]:
        if any(w < 0 or w > 999 for w in v.values()):
            raise ValueError("weights must be 0-999")
        if sum(v.values()) <= 0:
            raise ValueError("at least one weight must be above 0")
        return v


class RedirectSpec(_Strict):
    url: str = Field(description="Target; #{host}, #{port}, #{path} and #{query} are replaced (ALB style).")
    status: Literal[301, 302, 303, 307, 308] = Field(302, description="Redirect status code.")


class FixedResponseSpec(_Strict):
    status: int = Field(ge=200, le=599, description="Status code.")
    body: str = Field("", description="Response body (at most 1024 bytes, as ALB).", max_length=1024)
    content_type: str = Field("text/plain", description="Content-Type of the body.")


class RuleSpec(_Strict):
    """One listener rule: conditions and exactly one action. Rules are tried in order."""

    name: str | None = Field(None, description="Optional name shown in status and metrics.")
    match: RuleMatch = Field(description="Conditions; all must hold.")
    forward: str | ForwardSpec | None = Field(None, description="Target group name, or a weighted forward.")
    redirect: RedirectSpec | None = None
    fixed_response: FixedResponseSpec | None = None

    def forward_weights(self) -> dict[str, int] | None:
        if self.forward is None:
            return None
        if isinstance(self.forward, str):
            return {self.forward: 1}
        return dict(self.forward.target_groups)


class TimeoutsSpec(_Strict):
    """A listener's timeouts; each expiry answers as ALB does (408, 502 or 504) or closes."""

    connect: Duration = Field(3.0, description="Connecting to a target; past it the try fails (retried elsewhere, else 504).")
    client_header: Duration = Field(10.0, description="A client must send a whole request head within this, else 408.")
    idle: Duration = Field(60.0, description="A client connection with nothing in flight is closed after this (tcp: no byte either way).")
    response: Duration = Field(60.0, description="Per try: time for the target's response head, unless retries.per_try_timeout is set; 504.")
    request: Duration | None = Field(None, description="Whole request, retries included: no response head by then gives 504 (unset: no limit).")
    tunnel: Duration = Field(3600.0, description="An upgraded (WebSocket) connection with no byte either way is closed after this.")
    upstream_idle: Duration = Field(15.0, description="Pooled keep-alive connections to targets are closed after this long unused.")
    handshake: Duration = Field(10.0, description="https/tls: a TLS handshake (passthrough: the ClientHello) not done within this is cut.")


class RateLimitSpec(_Strict):
    """Per client IP token bucket; requests over it are answered 429 with Retry-After."""

    requests_per_second: float = Field(gt=0, le=1_000_000, description="Sustained requests per second per client IP.")
    burst: int = Field(20, ge=1, le=1_000_000, description="Requests a client may make at once before the rate applies.")


class LimitsSpec(_Strict):
    """What one client may send or hold; each limit answers with its own status and closes."""

    max_request_line: Size = Field(8192, ge=64, le=1 << 20, description="Method, target and version; longer: 414.")
    max_header_bytes: Size = Field(65536, ge=1024, le=1 << 20, description="All header fields together; more: 431.")
    max_headers: int = Field(100, ge=8, le=10_000, description="Number of header fields; more: 431.")
    max_body: Size | None = Field(None, description="Request body size; larger: 413 (unset: no limit; bodies are streamed).")
    max_connections: int = Field(20_000, ge=1, le=1_000_000, description="Open client connections on this listener; more are refused (503, closed).")
    max_connections_per_ip: int | None = Field(None, ge=1, le=1_000_000, description="Open connections from one client IP; more are refused (unset: no cap).")
    rate_limit: RateLimitSpec | None = Field(None, description="Optional request rate limit per client IP (429).")
    max_handshakes: int = Field(1000, ge=1, le=1_000_000, description="https/tls: TLS handshakes in progress at once (per worker); more connections are closed at once.")


class CertificateSpec(_Strict):
    """A certificate of an https/tls listener: PEM files, relative to the spec's folder (docs/tls.md)."""

    cert: str = Field(description="PEM file: the certificate, then its intermediates (leaf first).")
    key: str = Field(description="PEM file of the certificate's private key (unencrypted; RSA or ECDSA).")
    default: bool = Field(False, description="Served when no certificate matches the client's SNI (default: the first).")
    arn: str | None = Field(None, description="On AWS: use this ACM certificate instead of importing the files.")


class MutualAuthSpec(_Strict):
    """Client certificates (mutual TLS), as ALB's mutual_authentication."""

    mode: Literal["off", "verify", "passthrough"] = Field(
        "off", description="verify: refuse clients without a certificate the trust store vouches for; passthrough: ask for any certificate and forward it unverified.")
    trust_store: str | None = Field(None, description="verify: PEM file of the CA certificates that vouch for clients.")
    ignore_client_certificate_expiry: bool = Field(False, description="verify: accept expired client certificates.")
    header_prefix: str = Field(
        "X-Amzn-Mtls-Clientcert", pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Headers carrying the client certificate to targets (ALB's names: PREFIX-Subject, PREFIX-Leaf, ...).")


class SessionTicketsSpec(_Strict):
    """TLS session resumption by tickets; the keys rotate and are shared by every worker (and node)."""

    enabled: bool = Field(True, description="Issue and accept session tickets (resumption).")
    rotation: Duration = Field(3600.0, ge=60, le=86400 * 7, description="A new ticket key every this long; the previous one still decrypts.")
    key_file: str | None = Field(
        None, description="File of the shared secret (>= 32 bytes) the keys derive from; give the same file to every node (default: one per state_dir).")


class ListenerSpec(_Strict):
    port: int = Field(ge=0, le=65535, description="Port to listen on (0: any free port).")
    host: str = Field("127.0.0.1", description="Address to bind.")
    protocol: Literal["http", "https", "tcp", "tls"] = Field(
        "http", description="http: HTTP/1.1 reverse proxy; https: the same over TLS; tcp: byte stream; tls: byte stream over TLS (or passthrough).")
    default_target_group: str = Field(description="Target group that receives the listener's traffic.")
    rules: list[RuleSpec] = Field(default_factory=list, description="Content-based rules (http only), in order.")
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    certificates: list[CertificateSpec] = Field(default_factory=list, description="https/tls: certificates; chosen by SNI, wildcards included.")
    ssl_policy: str = Field(DEFAULT_POLICY, description="https/tls: ELB security policy name (protocol versions and ciphers; docs/tls.md).")
    mutual_authentication: MutualAuthSpec = Field(default_factory=MutualAuthSpec)
    session_tickets: SessionTicketsSpec = Field(default_factory=SessionTicketsSpec)
    passthrough: bool = Field(False, description="tls only: do not decrypt; route by the ClientHello's SNI (rules with sni).")

    @field_validator("ssl_policy")
    @classmethod
    def _check_policy(cls, v: str) -> str:
        policy(v)
        return v

    @property
    def tls(self) -> bool:
        """True for https and tls listeners."""
        return self.protocol in ("https", "tls")


class AwsSpec(_Strict):
    """Where and how ``fivenines aws`` deploys the service: EC2 instances behind Elastic Load Balancing."""

    region: str | None = Field(None, description="AWS region (default: --region, else the boto3 chain: AWS_REGION, profile).")
    vpc_id: str | None = Field(None, description="VPC of the stack (default: the VPC of subnets, else the default VPC).")
    subnets: list[str] | None = Field(
        None,
        min_length=2,
        description="Subnet ids in at least two availability zones (default: the default VPC's default subnets).",
    )
    ami: str = Field(
        "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        description="AMI id (ami-...) or resolve:ssm:PARAMETER of the instances.",
    )
    instance_type: str = Field("t3.micro", description="EC2 instance type.")
    key_name: str | None = Field(None, description="EC2 key pair for SSH (default: none).")
    security_groups: list[str] = Field(
        default_factory=list, description="Existing security group ids added to the instances (e.g. SSH access)."
    )
    allow_from: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"], description="CIDRs allowed to reach the listeners."
    )
    instance_port: int = Field(8080, ge=1, le=65535, description="Port the command listens on ({port}) on each instance.")
    user_data: str | None = Field(
        None, description="Shell script run as root on each instance before the service starts (e.g. install it)."
    )
    health_check_grace_period: Duration = Field(
        300.0, description="Time a new instance has to pass ELB checks before Auto Scaling may replace it."
    )
    internal: bool = Field(False, description="Internal load balancers (no internet-facing address).")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")

    @field_validator("allow_from")
    @classmethod
    def _check_allow_from(cls, v: list[str]) -> list[str]:
        import ipaddress

        for c in v:
            try:
                ipaddress.ip_network(c, strict=True)
            except ValueError:
                raise ValueError(f"{c!r} is not a CIDR, e.g. 0.0.0.0/0 or 203.0.113.0/24") from None
        return v

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.lower().startswith(("fivenines:", "aws:")):
                raise ValueError(f"tag {key!r}: the fivenines: and aws: prefixes are reserved")
        return v


_NAME_RE = r"^[a-zA-Z][a-zA-Z0-9_-]{0,31}$"


# --------------------------------------------------------------------------- cluster

MIN_LEASE_TTL = 1.0  # see ClusterSpec.lease_ttl


class HostReliabilitySpec(UnitReliabilitySpec):
    """How often a node's host fails and how long it stays down, for `fivenines model` (docs/availability.md, "Clusters")."""

    mtbf: Duration | None = Field(None, description="Mean time between failures of the host (default 180d).")
    mttr: Duration | None = Field(None, description="Mean time until the host serves again, replacement included (default 4h).")


class ClusterReliabilitySpec(HostReliabilitySpec):
    """Every node's host (and every etcd member's not on a node), and the VIP takeover, for `fivenines model`."""

    coverage: float = Field(1.0, ge=0, le=1, description="Probability that the VIP moves by itself when its holder fails.")
    manual_recovery: Duration = Field(3600.0, description="Mean time for a person to move the VIP when it does not.")

    @field_validator("manual_recovery")
    @classmethod
    def _check_recovery(cls, v: float) -> float:
        _positive_duration(v)
        return v


class ClusterNodeSpec(_Strict):
    """One fivenines node (host) of the cluster."""

    name: str = Field(pattern=_NAME_RE, description="Node name, given to `fivenines up --node NAME`.")
    address: str = Field(description="The node's own IPv4 address on the cluster's network (not the VIP).")
    zone: str | None = Field(None, description="Failure zone (rack, room, availability zone): instances spread over zones.")
    reliability: HostReliabilitySpec | None = Field(None, description="This node's host (default: cluster.reliability).")

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        import ipaddress

        try:
            ipaddress.IPv4Address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address, e.g. 10.0.0.11") from None
        return v


class VrrpSpec(_Strict):
    """coordination: vrrp: keepalived (VRRPv3, unicast between the two nodes) moves the VIP."""

    advert_int: Duration = Field(1.0, description="Advertisement interval; a backup takes over after about 3 x this (+ skew).")
    virtual_router_id: int = Field(51, ge=1, le=255, description="VRRP router id, unique on the network segment.")
    priority: dict[str, int] = Field(
        default_factory=dict,
        description="Priority per node name (1-254); default: the first node 150, the second 100.",
    )
    preempt: bool = Field(False, description="A node with a higher priority takes the VIP back when it returns.")

    @field_validator("advert_int")
    @classmethod
    def _check_advert(cls, v: float) -> float:
        if not 0.01 <= v <= 40.95:
            raise ValueError(f"advert_int must be between 10ms and 40.95s (VRRPv3 counts centiseconds; got {format_duration(v)})")
        return v

    @field_validator("priority")
    @classmethod
    def _check_priority(cls, v: dict[str, int]) -> dict[str, int]:
        for node, prio in v.items():
            if not 1 <= prio <= 254:
                raise ValueError(f"priority of {node!r} must be 1-254 (got {prio})")
        return v


class ClusterSpec(_Strict):
    """Several fivenines nodes behind one floating address (VIP); every node runs `fivenines up SPEC --node NAME`."""

    nodes: list[ClusterNodeSpec] = Field(min_length=1, description="The nodes, in order of preference.")
    vip: str = Field(description="The floating address with its prefix length, e.g. 10.0.0.100/24, in the nodes' subnet.")
    interface: str = Field("eth0", description="Network interface the VIP is added to on the node holding it.")
    coordination: Literal["etcd", "vrrp"] | None = Field(
        None, description="etcd: a leader lease decides who holds the VIP (default when etcd is given); vrrp: keepalived, two nodes."
    )
    etcd: list[str] | None = Field(None, description="etcd client URLs, e.g. [http://10.0.0.2:2379].")
    lease_ttl: Duration = Field(
        1.0,
        description="etcd lease time to live (whole seconds, at least 1s): another node holds the VIP about this "
        "(+ up to 0.5s, etcd's expiry sweep) after the leader stops renewing; the leader's fence closes a quarter of it "
        "early. etcd grants no lease shorter than 1.5 x its --election-timeout, in whole seconds (<= 666ms for 1s, "
        "<= 1333ms for 2s); a shorter one is granted at that minimum.",
    )
    key_prefix: str = Field("/fivenines", description="etcd key prefix; the cluster's keys are PREFIX/NAME/cluster/...")
    vrrp: VrrpSpec | None = Field(None, description="keepalived settings, for coordination: vrrp.")
    reliability: ClusterReliabilitySpec = Field(
        default_factory=lambda: ClusterReliabilitySpec(), description="The nodes' hosts and the takeover, for fivenines model."
    )

    @field_validator("vip")
    @classmethod
    def _check_vip(cls, v: str) -> str:
        import ipaddress

        if "/" not in v:
            raise ValueError(f"{v!r}: give the prefix length too, e.g. 10.0.0.100/24")
        try:
            ipaddress.IPv4Interface(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address with a prefix length, e.g. 10.0.0.100/24") from None
        return v

    @field_validator("etcd")
    @classmethod
    def _check_endpoints(cls, v: list[str] | None) -> list[str] | None:
        for url in v or []:
            if not re.fullmatch(r"https?://[^/\s]+/?", url):
                raise ValueError(f"{url!r} is not an etcd client URL, e.g. http://10.0.0.2:2379")
        return v

    @field_validator("lease_ttl")
    @classmethod
    def _check_ttl(cls, v: float) -> float:
        if v < MIN_LEASE_TTL or v != int(v):
            raise ValueError(f"lease_ttl must be whole seconds and at least {format_duration(MIN_LEASE_TTL)}: "
                             f"etcd's leases count whole seconds (got {format_duration(v)})")
        return v

    @property
    def mode(self) -> Literal["etcd", "vrrp"]:
        if self.coordination is not None:
            return self.coordination
        return "etcd" if self.etcd else "vrrp"

    def node(self, name: str) -> ClusterNodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def priority(self, name: str) -> int:
        given = self.vrrp.priority if self.vrrp else {}
        if name in given:
            return given[name]
        return 150 if self.nodes[0].name == name else 100


class Spec(_Strict):
    """A service's redundancy, balancing and health checking, in one file."""

    name: str = Field(pattern=_NAME_RE, description="Name of the service (letters, digits, - and _).")
    admin: AdminSpec = Field(default_factory=lambda: AdminSpec())
    state_dir: str | None = Field(None, description="Where logs and state go (default: .fivenines/NAME beside the spec).")
    workers: int = Field(1, ge=1, le=64, description="Data-plane processes sharing each listening port.")
    listeners: list[ListenerSpec] = Field(min_length=1)
    target_groups: dict[str, TargetGroupSpec] = Field(min_length=1)
    load_balancer: LoadBalancerSpec | None = Field(None, description="The load balancer itself, for fivenines model.")
    slo: SloSpec | None = Field(None, description="Service level objective: target percent over a window.")
    aws: AwsSpec | None = Field(None, description="Deployment on AWS by `fivenines aws` (default: all defaults below).")
    cluster: ClusterSpec | None = Field(None, description="Several nodes behind a floating address (default: one node).")

    @field_validator("target_groups")
    @classmethod
    def _check_group_names(cls, v: dict[str, TargetGroupSpec]) -> dict[str, TargetGroupSpec]:
        for name in v:
            if not re.match(_NAME_RE, name):
                raise ValueError(f"target group name {name!r} must match {_NAME_RE}")
        return v


# --------------------------------------------------------------------------- checks beyond one field


def split_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9001"`` → ``("127.0.0.1", 9001)``.

    >>> split_hostport("127.0.0.1:9900")
    ('127.0.0.1', 9900)
    """
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError(f"{text!r} is not host:port, e.g. 127.0.0.1:9001")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1, ``localhost`` (and IPv4-mapped loopback).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("localhost")
    (True, True, False, True)
    """
    import ipaddress

    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def semantic_errors(spec: Spec) -> list[FieldError]:
    """Problems that involve more than one field."""
    errors: list[FieldError] = []
    admin_host = split_hostport(spec.admin.listen)[0]
    if not is_loopback(admin_host) and not spec.admin.token_file:
        errors.append(FieldError(
            "admin.listen",
            f"{spec.admin.listen} is not a loopback address: set admin.token_file so that every admin "
            "call needs the token, or listen on 127.0.0.1"))
    groups = sorted(spec.target_groups)
    for i, lst in enumerate(spec.listeners):
        if lst.default_target_group not in spec.target_groups:
            errors.append(
                FieldError(
                    f"listeners.{i}.default_target_group",
                    f"no target group {lst.default_target_group!r}; defined: {', '.join(groups)}",
                )
            )
    seen: dict[tuple[str, int], str] = {}
    for i, lst in enumerate(spec.listeners):
        if lst.port == 0:
            continue
        key = (lst.host, lst.port)
        if key in seen:
            errors.append(FieldError(f"listeners.{i}.port", f"port {lst.port} already used by {seen[key]}"))
        seen[key] = f"listeners.{i}"
    for i, lst in enumerate(spec.listeners):
        if lst.protocol == "tcp" and lst.rules:
            errors.append(FieldError(f"listeners.{i}.rules", "rules match HTTP requests; a tcp listener has none"))
        for j, rule in enumerate(lst.rules):
            rpath = f"listeners.{i}.rules.{j}"
            actions = [a for a in ("forward", "redirect", "fixed_response") if getattr(rule, a) is not None]
            if len(actions) != 1:
                errors.append(FieldError(rpath, "give exactly one action: forward, redirect or fixed_response"))
            if not any(v is not None for v in rule.match.model_dump().values()):
                errors.append(FieldError(f"{rpath}.match", "give at least one condition: path, host, header, method, query, source_ip"
                                         + (", sni" if lst.protocol == "tls" else "")))
            errors.extend(_sni_rule_errors(lst, rule, rpath))
            for tgname in rule.forward_weights() or {}:
                if tgname not in spec.target_groups:
                    fpath = f"{rpath}.forward" + ("" if isinstance(rule.forward, str) else f".target_groups.{tgname}")
                    errors.append(FieldError(fpath, f"no target group {tgname!r}; defined: {', '.join(groups)}"))
        errors.extend(tls_errors(lst, f"listeners.{i}"))
    for name, tg in spec.target_groups.items():
        path = f"target_groups.{name}"
        if tg.algorithm == "hash":
            ho = tg.hash_on
            given = 0 if ho is None else sum([ho.header is not None, ho.cookie is not None, ho.uri])
            if given != 1:
                errors.append(FieldError(f"{path}.hash_on", "algorithm hash needs exactly one of header, cookie or uri"))
        elif tg.hash_on is not None:
            errors.append(FieldError(f"{path}.hash_on", f"only used with algorithm hash (algorithm is {tg.algorithm})"))
        if (tg.instances is None) == (tg.targets is None):
            errors.append(FieldError(path, "give exactly one of instances (run them) or targets (balance existing servers)"))
        if tg.instances is not None:
            inst = tg.instances
            if isinstance(inst.command, str) and not inst.shell:
                errors.append(
                    FieldError(
                        f"{path}.instances.command",
                        "a string command needs shell: true; otherwise give an argv list",
                    )
                )
            rng = parse_port_range(inst.ports)
            if rng is not None and rng[1] - rng[0] + 1 < tg.instance_slots():
                what = "count + standby" if tg.scaling is None else "scaling.max + standby"
                errors.append(
                    FieldError(
                        f"{path}.instances.ports",
                        f"range {inst.ports} has {rng[1] - rng[0] + 1} ports but {what} = {tg.instance_slots()}",
                    )
                )
    errors.extend(_failover_errors(spec))
    errors.extend(replicated_errors(spec))
    errors.extend(scaling_errors(spec))
    errors.extend(cluster_errors(spec))
    return errors


def scaling_errors(spec: Spec) -> list[FieldError]:
    """Cross-field rules of ``scaling:`` (instances only, min <= count <= max, one metric per policy)."""
    errors: list[FieldError] = []
    for name, tg in spec.target_groups.items():
        sc, path = tg.scaling, f"target_groups.{name}.scaling"
        if sc is None:
            continue
        if tg.instances is None or tg.replicated is not None:
            why = "a replicated group has one primary" if tg.replicated is not None else "give instances: to scale"
            errors.append(FieldError(path, f"only groups of instances fivenines runs can scale ({why})"))
        if spec.workers > 1:
            errors.append(FieldError(path, f"scaling needs workers: 1 (workers is {spec.workers}: the worker "
                                     "processes hold the targets they balance, set up at start)"))
        if sc.min > sc.max:
            errors.append(FieldError(f"{path}.min", f"must be at most max ({sc.max}), got {sc.min}"))
        elif tg.instances is not None and not sc.min <= tg.instances.count <= sc.max:
            errors.append(FieldError(f"target_groups.{name}.instances.count",
                                     f"the starting count must be within scaling min..max ({sc.min}..{sc.max}), "
                                     f"got {tg.instances.count}"))
        metrics: dict[str, int] = {}
        for i, pol in enumerate(sc.policies):
            m = pol.metric()
            if m is None:
                errors.append(FieldError(f"{path}.policies.{i}", "give exactly one of requests_per_target, "
                                         "in_flight_per_target, p99_latency, cpu (with its target)"))
            elif m[0] in metrics:
                errors.append(FieldError(f"{path}.policies.{i}", f"{m[0]} already in policies.{metrics[m[0]]}"))
            else:
                metrics[m[0]] = i
        if "p99_latency" in metrics and len(metrics) == 1:
            errors.append(FieldError(f"{path}.policies", "p99_latency cannot tell how far the group may shrink "
                                     "(latency stays flat until an instance saturates): give it together with "
                                     "requests_per_target, in_flight_per_target or cpu"))
        if sc.evaluation_interval <= 0:
            errors.append(FieldError(f"{path}.evaluation_interval", "must be greater than 0"))
        if sc.scale_out_window < sc.evaluation_interval:
            errors.append(FieldError(f"{path}.scale_out_window", f"must be at least evaluation_interval "
                                     f"({format_duration(sc.evaluation_interval)})"))
    return errors


def _sni_rule_errors(lst: ListenerSpec, rule: RuleSpec, rpath: str) -> list[FieldError]:
    """A tls listener routes connections: by sni and source_ip, to a forward; http/https have no sni."""
    if lst.protocol != "tls":
        if rule.match.sni is not None:
            return [FieldError(f"{rpath}.match.sni", f"sni matches tls listeners (this one is {lst.protocol}); "
                               "match the Host header with host:")]
        return []
    http_only = sorted(k for k, v in rule.match.model_dump().items() if v is not None and k not in ("sni", "source_ip"))
    errors = [FieldError(f"{rpath}.match.{k}", "a tls listener routes connections, not requests: use sni or source_ip")
              for k in http_only]
    if rule.redirect is not None or rule.fixed_response is not None:
        errors.append(FieldError(rpath, "a tls listener can only forward (redirect and fixed_response answer HTTP)"))
    return errors


def tls_errors(lst: ListenerSpec, path: str) -> list[FieldError]:
    """The TLS settings of one listener, without reading any file (see :mod:`fivenines.certs` for that)."""
    errors: list[FieldError] = []
    written = lst.model_fields_set
    if not lst.tls:
        for name in ("certificates", "ssl_policy", "mutual_authentication", "session_tickets", "passthrough"):
            if name in written:
                errors.append(FieldError(f"{path}.{name}", f"only for https and tls listeners (protocol is {lst.protocol})"))
        return errors
    if lst.passthrough:
        if lst.protocol != "tls":
            errors.append(FieldError(f"{path}.passthrough", "only tls listeners pass TLS through; https terminates it"))
        for name in ("certificates", "ssl_policy", "mutual_authentication", "session_tickets"):
            if name in written:
                errors.append(FieldError(f"{path}.{name}", "a passthrough listener does not terminate TLS: the targets "
                                         "hold the certificates; remove it"))
        return errors
    if not lst.certificates:
        errors.append(FieldError(f"{path}.certificates", f"a {lst.protocol} listener needs at least one certificate: "
                                 "[{cert: site.pem, key: site.key}] (or passthrough: true on a tls listener)"))
    defaults = [j for j, c in enumerate(lst.certificates) if c.default]
    if len(defaults) > 1:
        errors.append(FieldError(f"{path}.certificates.{defaults[1]}.default",
                                 f"certificates.{defaults[0]} is already the default; at most one"))
    mtls = lst.mutual_authentication
    if mtls.mode == "verify" and not mtls.trust_store:
        errors.append(FieldError(f"{path}.mutual_authentication.trust_store",
                                 "mode verify needs trust_store: a PEM file of the CA certificates that vouch for clients"))
    if mtls.mode != "verify":
        for name in ("trust_store", "ignore_client_certificate_expiry"):
            if name in mtls.model_fields_set:
                errors.append(FieldError(f"{path}.mutual_authentication.{name}", f"only used with mode verify (mode is {mtls.mode})"))
    return errors


def _failover_errors(spec: Spec) -> list[FieldError]:
    """Cross-field checks of health checks, detectors and hedging."""
    errors: list[FieldError] = []
    for name, tg in spec.target_groups.items():
        hc = tg.health_check
        path = f"target_groups.{name}.health_check"
        if hc.protocol == "command" and not hc.command:
            errors.append(FieldError(f"{path}.command", "protocol command needs command: an argv list, e.g. [./check.sh, '{port}']"))
        if hc.protocol != "command" and hc.command is not None:
            errors.append(FieldError(f"{path}.command", f"only used with protocol command (protocol is {hc.protocol})"))
        if hc.protocol != "http" and (hc.expect_body is not None or hc.method != "GET"):
            errors.append(FieldError(path, f"method and expect_body are for http checks (protocol is {hc.protocol})"))
        if hc.detector.min_std_dev is not None and hc.detector.min_std_dev <= 0:
            errors.append(FieldError(f"{path}.detector.min_std_dev", "must be greater than 0"))
        if hc.agent is not None:
            if hc.agent.interval <= 0:
                errors.append(FieldError(f"{path}.agent.interval", "must be greater than 0"))
            if (hc.agent.port is None) == (hc.agent.path is None):
                errors.append(FieldError(f"{path}.agent", "give exactly one of port (TCP agent) or path (HTTP agent)"))
            elif hc.agent.path is not None and not hc.agent.path.startswith("/"):
                errors.append(FieldError(f"{path}.agent.path", f"{hc.agent.path!r} must start with /"))
        od = tg.outlier_detection
        if od.base_ejection_time <= 0:
            errors.append(FieldError(f"target_groups.{name}.outlier_detection.base_ejection_time", "must be greater than 0"))
        if od.max_ejection_time < od.base_ejection_time:
            errors.append(FieldError(f"target_groups.{name}.outlier_detection.max_ejection_time",
                                     f"must be at least base_ejection_time ({format_duration(od.base_ejection_time)})"))
        if tg.hedging is not None:
            hpath = f"target_groups.{name}.hedging.delay"
            ptt = tg.retries.per_try_timeout
            if tg.hedging.delay <= 0:
                errors.append(FieldError(hpath, "must be greater than 0"))
            elif ptt is not None and tg.hedging.delay >= ptt:
                errors.append(FieldError(hpath, f"must be less than retries.per_try_timeout ({format_duration(ptt)})"))
    return errors


def replicated_errors(spec: Spec) -> list[FieldError]:
    """Cross-field rules of ``replicated:`` groups (one primary, at least one replica, TCP only)."""
    errors: list[FieldError] = []
    for name, tg in spec.target_groups.items():
        rep = tg.replicated
        if rep is None:
            continue
        path = f"target_groups.{name}"
        if rep.kind == "postgres":
            errors.append(FieldError(f"{path}.replicated.kind", "postgres is not built in yet; use kind: custom with "
                                     "role, promote and follow commands (docs/replication.md)"))
        if (rep.kind == "custom") != (rep.custom is not None):
            errors.append(FieldError(f"{path}.replicated.custom", "give custom: {role_command, promote_command, "
                                     "follow_command} exactly when kind is custom"))
        inst = tg.instances
        if inst is not None:
            if inst.count != 1:
                errors.append(FieldError(f"{path}.instances.count", f"a replicated group has one primary: count must "
                                         f"be 1 (got {inst.count}); replicas are standby: M"))
            if inst.standby < 1:
                errors.append(FieldError(f"{path}.instances.standby", "a replicated group needs at least one replica "
                                         "(standby: 1 or more)"))
            if rep.kind == "redis" and isinstance(inst.command, str):
                errors.append(FieldError(f"{path}.instances.command", "kind redis needs an argv list, e.g. "
                                         "[redis-server, --port, '{port}']: fivenines appends replication options"))
            if rep.lease is not None:
                errors.append(FieldError(f"{path}.replicated.lease", "several fivenines nodes must manage the same "
                                         "servers: with a lease, list them as targets, not instances"))
        elif tg.targets is not None and len(tg.targets) < 2:
            errors.append(FieldError(f"{path}.targets", "a replicated group needs a primary and at least one replica"))
        if rep.lease is not None and spec.workers > 1:
            errors.append(FieldError(f"{path}.replicated.lease", "a lease needs workers: 1 (worker processes "
                                     "cannot check the lease deadline themselves)"))
        for i, lst in enumerate(spec.listeners):
            if lst.default_target_group == name and lst.protocol != "tcp":
                errors.append(FieldError(f"listeners.{i}.protocol", f"target group {name!r} is a replicated "
                                         f"{rep.kind} store: use protocol: tcp"))
        errors.extend(_backup_errors(rep.backup, f"{path}.replicated.backup", rep.kind, inst is not None))
        rl = rep.read_listener
        if rl is not None and rl.port != 0:
            for i, lst in enumerate(spec.listeners):
                if (lst.host, lst.port) == (rl.host, rl.port):
                    errors.append(FieldError(f"{path}.replicated.read_listener.port",
                                             f"port {rl.port} already used by listeners.{i}"))
    return errors


def _backup_errors(b: BackupSpec | None, path: str, kind: str, instances: bool) -> list[FieldError]:
    if b is None:
        return []
    errors = []
    if kind != "redis":
        errors.append(FieldError(path, f"backups are built in for kind redis only (kind is {kind})"))
    if b.point_in_time and not instances:
        errors.append(FieldError(f"{path}.point_in_time", "needs instances: fivenines copies the AOF files of "
                                 "replicas it runs (targets: servers elsewhere have no files here)"))
    s3 = b.to.startswith("s3://")
    for name in ("server_side_encryption", "kms_key_id", "region", "endpoint_url"):
        if getattr(b, name) is not None and not s3:
            errors.append(FieldError(f"{path}.{name}", f"only used with to: s3://bucket/prefix (to is {b.to!r})"))
    if b.kms_key_id is not None and b.server_side_encryption != "aws:kms":
        errors.append(FieldError(f"{path}.kms_key_id", "only used with server_side_encryption: aws:kms"))
    return errors




def cluster_errors(spec: Spec) -> list[FieldError]:
    """Cross-field rules of ``cluster:``: unique names and addresses, the VIP in the nodes' subnet, the backend."""
    import ipaddress

    c = spec.cluster
    if c is None:
        return [FieldError(f"target_groups.{name}.instances.placement", "actives per node need a cluster: section")
                for name, tg in spec.target_groups.items()
                if tg.instances is not None and isinstance(tg.instances.placement, dict)]
    errors: list[FieldError] = []
    vip = ipaddress.IPv4Interface(c.vip)
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, n in enumerate(c.nodes):
        path = f"cluster.nodes.{i}"
        if n.name in names:
            errors.append(FieldError(f"{path}.name", f"node {n.name!r} is already cluster.nodes.{names[n.name]}"))
        names.setdefault(n.name, i)
        if n.address in addresses:
            errors.append(FieldError(f"{path}.address", f"{n.address} is already the address of cluster.nodes.{addresses[n.address]}"))
        addresses.setdefault(n.address, i)
        if ipaddress.IPv4Address(n.address) not in vip.network:
            errors.append(FieldError("cluster.vip", f"{c.vip} is not in the subnet of node {n.name!r} ({n.address}): "
                                     f"the VIP must be in the nodes' subnet on {c.interface} (here {vip.network})"))
        if n.address == str(vip.ip):
            errors.append(FieldError("cluster.vip", f"{vip.ip} is node {n.name!r}'s own address; the VIP must be a free one"))
    if vip.ip in (vip.network.network_address, vip.network.broadcast_address) and vip.network.prefixlen < 31:
        errors.append(FieldError("cluster.vip", f"{vip.ip} is the network or broadcast address of {vip.network}"))
    if c.mode == "etcd" and not c.etcd:
        errors.append(FieldError("cluster.etcd", "coordination etcd needs etcd client URLs, e.g. [http://10.0.0.2:2379]"))
    if c.mode == "vrrp":
        if len(c.nodes) > 2:
            errors.append(FieldError("cluster.coordination", f"vrrp (keepalived) pairs two nodes; this cluster has "
                                     f"{len(c.nodes)}: use coordination: etcd"))
        for node in (c.vrrp.priority if c.vrrp else {}):
            if node not in names:
                errors.append(FieldError(f"cluster.vrrp.priority.{node}", f"no node {node!r}; nodes: {', '.join(names)}"))
    elif c.vrrp is not None:
        errors.append(FieldError("cluster.vrrp", "only used with coordination: vrrp (coordination is etcd)"))
    errors.extend(_cluster_group_errors(spec, c, list(names)))
    return errors


def _cluster_group_errors(spec: Spec, c: ClusterSpec, names: list[str]) -> list[FieldError]:
    """What a cluster asks of the target groups: placements naming its nodes, fixed ports without etcd,
    and the features that do not run across nodes yet."""
    errors: list[FieldError] = []
    for name, tg in spec.target_groups.items():
        path = f"target_groups.{name}"
        if tg.replicated is not None:
            errors.append(FieldError(f"{path}.replicated", "a replicated store does not run across cluster nodes yet "
                                     "(its failover must run on one node and the others follow its primary record; "
                                     "docs/cluster.md): run it on its own fivenines, without cluster:"))
        if tg.scaling is not None:
            errors.append(FieldError(f"{path}.scaling", "scaling does not run across cluster nodes yet: "
                                     "set count and placement instead"))
        inst = tg.instances
        if inst is None:
            continue
        if isinstance(inst.placement, dict):
            for node, n in inst.placement.items():
                if node not in names:
                    errors.append(FieldError(f"{path}.instances.placement.{node}",
                                             f"no node {node!r}; nodes: {', '.join(names)}"))
                elif n < 0:
                    errors.append(FieldError(f"{path}.instances.placement.{node}", f"must be >= 0, got {n}"))
            if sum(inst.placement.values()) != inst.count:
                errors.append(FieldError(f"{path}.instances.placement", f"the actives per node add up to "
                                         f"{sum(inst.placement.values())}, not count ({inst.count})"))
        if c.mode == "vrrp" and parse_port_range(inst.ports) is None:
            errors.append(FieldError(f"{path}.instances.ports", "coordination vrrp has no store to publish the "
                                     "instances' ports: give a range (e.g. 9101-9110); instance i of the group "
                                     "listens on the range's i-th port of its node"))
    return errors


def node_error(spec: Spec, node: str | None) -> FieldError | None:
    """What is wrong with ``fivenines up --node NODE`` for this spec, or None.

    A spec with a cluster needs ``--node`` naming one of its nodes; one without takes none.
    """
    if spec.cluster is None:
        return None if node is None else FieldError("cluster", f"--node {node}: this spec has no cluster: section")
    names = [n.name for n in spec.cluster.nodes]
    if node is None:
        return FieldError("cluster.nodes", f"this spec describes a cluster: give --node NAME, one of {', '.join(names)}")
    if node not in names:
        return FieldError("cluster.nodes", f"--node {node}: no such node; nodes: {', '.join(names)}")
    return None


def port_is_free(host: str, port: int) -> bool:
    """True when a TCP listener could bind ``host:port`` now."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_errors(spec: Spec) -> list[FieldError]:
    """Ports the spec would bind that are in use now (listeners, admin, instance ranges)."""
    errors: list[FieldError] = []
    for i, lst in enumerate(spec.listeners):
        if not port_is_free(lst.host, lst.port):
            errors.append(FieldError(f"listeners.{i}.port", f"{lst.host}:{lst.port} is in use"))
    host, port = split_hostport(spec.admin.listen)
    if not port_is_free(host, port):
        errors.append(FieldError("admin.listen", f"{host}:{port} is in use"))
    for name, tg in spec.target_groups.items():
        if tg.instances is None:
            continue
        rng = parse_port_range(tg.instances.ports)
        if rng is None:
            continue
        free = sum(1 for p in range(rng[0], rng[1] + 1) if port_is_free("127.0.0.1", p))
        if free < tg.instance_slots():
            errors.append(
                FieldError(
                    f"target_groups.{name}.instances.ports",
                    f"only {free} free ports in {tg.instances.ports}; need {tg.instance_slots()}",
                )
            )
    return errors


# --------------------------------------------------------------------------- loading


def _walk_model(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` from ``model`` (for listing valid keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                # a dict key (e.g. a target group name): step into the dict's value type
                continue
            current = _model_in(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for a in args:
        found = _model_in(a)
        if found is not None:
            return found
    return None


def _pydantic_errors(exc: ValidationError) -> Iterator[FieldError]:
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _walk_model(Spec, loc[:-1])
            valid = ", ".join(parent.model_fields) if parent else ""
            yield FieldError(path, f"unknown key; valid keys here: {valid}")
        elif kind == "missing":
            yield FieldError(path, "required but missing")
        else:
            msg = str(err["msg"])
            msg = msg.removeprefix("Value error, ")
            got = err.get("input")
            if kind not in ("value_error",) and not isinstance(got, dict | list):
                msg = f"{msg} (got {got!r})"
            yield FieldError(path, msg)


def parse_spec(data: Any, file: str = "<spec>") -> Spec:
    """Validate already-parsed YAML/JSON data into a :class:`Spec`, or raise :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(file, [FieldError("", "the spec must be a mapping (name:, listeners:, target_groups:)")])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(file, list(_pydantic_errors(exc))) from None
    errors = semantic_errors(spec)
    if errors:
        raise SpecError(file, errors)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file. Raises :class:`SpecError` naming the file and field paths."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(p), [FieldError("", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(str(p), [FieldError("", f"not valid YAML: {where}{problem}")]) from None
    spec = parse_spec(data, str(p))
    if any(lst.tls for lst in spec.listeners):
        import time

        from fivenines.certs import tls_file_problems

        problems = tls_file_problems(spec, p.parent, time.time())
        if problems.errors:
            raise SpecError(str(p), problems.errors)
    return spec


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``fivenines.yaml`` (for editors and the docs)."""
    return Spec.model_json_schema()
