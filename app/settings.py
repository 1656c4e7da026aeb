"""Settings, read once from the environment and passed to `create_app`.

Every environment variable the project reads is a field here, with its
default and a one-line description; docs/configuration.md documents the same table, and
a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The feed queries the service can serve (app/feed.py): its own, or the source design's JOIN.
FEED_QUERIES = ("monogram", "seed")
FEED_MODES = ("pull", "push", "hybrid")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`127.0.0.1, 10.0.0.0/8` as networks; raises ValueError on anything else."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def _env(name: str, doc: str, **kwargs: Any) -> Any:
    return field(metadata={"env": name, "doc": doc}, **kwargs)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _env("HOST", "address the service listens on", default="127.0.0.1")
    port: int = _env("PORT", "port the service listens on", default=8080)
    log_level: str = _env("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", default="INFO")
    shutdown_timeout: float = _env(
        "SHUTDOWN_TIMEOUT",
        "seconds in-flight requests get to finish after SIGTERM",
        default=20.0,
    )
    request_deadline: float = _env(
        "REQUEST_DEADLINE",
        "seconds a request may take in all before it gets 503 (an upload's count starts "
        "once its body has arrived: the body is held to UPLOAD_MIN_RATE instead)",
        default=10.0,
    )
    idle_timeout: float = _env(
        "IDLE_TIMEOUT",
        "seconds a connection may stay open without a whole request head (idle keep-alive "
        "connections and slowloris clients alike) before it is closed",
        default=15.0,
    )
    shutdown_drain: float = _env(
        "SHUTDOWN_DRAIN",
        "seconds after SIGTERM during which /readyz answers 503 and requests are still served, "
        "so a load balancer's health check moves traffic away first (`make stack` sets 2)",
        default=0.0,
    )
    service_instance: str | None = _env(
        "SERVICE_INSTANCE",
        "this process's name in the per-process request counter; unset: the host name",
        default=None,
    )

    database_url: str | None = _env(
        "DATABASE_URL",
        "PostgreSQL to use; unset: `make run` starts the embedded one under LOCAL_DIR",
        default=None,
        repr=False,
    )
    db_max_connections: int = _env(
        "DB_MAX_CONNECTIONS",
        "the server's max_connections, shared by every service process",
        default=100,
    )
    db_reserved_connections: int = _env(
        "DB_RESERVED_CONNECTIONS",
        "connections kept free for migrations, psql and monitoring",
        default=10,
    )
    service_processes: int = _env(
        "SERVICE_PROCESSES",
        "how many service processes share the database; each pool gets an equal share",
        default=1,
    )
    db_acquire_timeout: float = _env(
        "DB_ACQUIRE_TIMEOUT",
        "seconds a request waits for a pooled connection before it gets 503",
        default=1.0,
    )
    db_connect_timeout: float = _env(
        "DB_CONNECT_TIMEOUT", "seconds to open one new database connection", default=2.0
    )
    db_command_timeout: float = _env(
        "DB_COMMAND_TIMEOUT", "seconds one SQL statement may run", default=5.0
    )

    s3_endpoint_url: str | None = _env(
        "S3_ENDPOINT_URL",
        "S3 endpoint; unset: `make run` starts moto on LOCAL_S3_PORT "
        "(for AWS itself set e.g. https://s3.us-east-1.amazonaws.com)",
        default=None,
    )
    s3_bucket: str = _env("S3_BUCKET", "bucket for originals and thumbnails", default="monogram")
    s3_region: str = _env("S3_REGION", "the bucket's region", default="us-east-1")
    s3_access_key_id: str | None = _env(
        "S3_ACCESS_KEY_ID",
        "access key; unset: botocore's usual chain (AWS_* variables, profile, instance role)",
        default=None,
    )
    s3_secret_access_key: str | None = _env(
        "S3_SECRET_ACCESS_KEY", "secret key matching S3_ACCESS_KEY_ID", default=None, repr=False
    )
    s3_public_base_url: str | None = _env(
        "S3_PUBLIC_BASE_URL",
        "the bucket's public URL (the origin of the images); unset: S3_ENDPOINT_URL/S3_BUCKET",
        default=None,
    )
    image_base_url: str | None = _env(
        "IMAGE_BASE_URL",
        "prefix of the image URLs in every response, built when it is rendered (an edge cache "
        "or CDN); unset: S3_PUBLIC_BASE_URL's",
        default=None,
    )
    edge_purge_url: str | None = _env(
        "EDGE_PURGE_URL",
        "edge cache that a delete sends PURGE requests to, for IMAGE_BASE_URL's path and the key; "
        "unset: no purges (`make stack` sets it for its Varnish)",
        default=None,
    )
    s3_timeout: float = _env(
        "S3_TIMEOUT", "seconds for one S3 connect or read before it fails", default=3.0
    )
    s3_deadline: float = _env(
        "S3_DEADLINE",
        "seconds storing an upload's objects may take, retries with backoff included (504 past it)",
        default=6.0,
    )
    metrics_token: str | None = _env(
        "METRICS_TOKEN",
        "if set, GET /metrics needs it as a bearer token; unset: /metrics is open",
        default=None,
        repr=False,
    )
    prometheus_multiproc_dir: str | None = _env(
        "PROMETHEUS_MULTIPROC_DIR",
        "with several service processes: one empty directory they all share, so /metrics "
        "serves their sum (prometheus-client's multiprocess mode); unset: per process",
        default=None,
    )
    readiness_timeout: float = _env(
        "READINESS_TIMEOUT",
        "seconds /readyz waits for PostgreSQL and S3 before answering 503",
        default=1.0,
    )

    jwt_secret: str | None = _env(
        "JWT_SECRET",
        "HS256 key for access tokens, 32+ characters; unset: `make run` generates one in "
        "LOCAL_DIR (and says so in the log), `serve` refuses to start",
        default=None,
        repr=False,
    )
    jwt_ttl: int = _env("JWT_TTL", "seconds an access token stays valid", default=3600)
    jwt_leeway: float = _env(
        "JWT_LEEWAY", "seconds of clock skew tolerated on exp and iat", default=10.0
    )
    auth_cache_seconds: float = _env(
        "AUTH_CACHE_SECONDS",
        "seconds a process trusts an account's token key before reading it again: how long "
        "another process may still accept a revoked token or a deleted account's (0: never)",
        default=2.0,
    )
    jwt_issuer: str = _env("JWT_ISSUER", "iss claim set and required", default="monogram")
    jwt_audience: str = _env("JWT_AUDIENCE", "aud claim set and required", default="monogram-api")
    rate_limit_per_second: float = _env(
        "RATE_LIMIT_PER_SECOND",
        "requests per second each user may make, per process",
        default=1000.0,
    )
    rate_limit_burst: int = _env(
        "RATE_LIMIT_BURST", "requests a user may make at once after being idle", default=1000
    )
    admission_control: bool = _env(
        "ADMISSION_CONTROL",
        "limit each route class (reads, writes, uploads) to the requests its latency allows, "
        "refusing the excess at once with 503 (docs/design.md, Overload)",
        default=True,
    )
    admission_read_target: float = _env(
        "ADMISSION_READ_TARGET",
        "seconds: the p90 in service that reads (GET) are held to; over it, fewer are admitted",
        default=0.04,
    )
    admission_write_target: float = _env(
        "ADMISSION_WRITE_TARGET",
        "seconds: the p90 in service that writes (posts, likes, follows, logins) are held to",
        default=0.1,
    )
    admission_upload_target: float = _env(
        "ADMISSION_UPLOAD_TARGET",
        "seconds: the p90 in service that uploads (V0 bodies, V1 presign and complete) are held to",
        default=0.6,
    )
    admission_read_wait: float = _env(
        "ADMISSION_READ_WAIT",
        "seconds a read may wait for a place within its class's limit before it gets 503 (long "
        "enough for a burst of arrivals to be served rather than refused)",
        default=0.03,
    )
    admission_write_wait: float = _env(
        "ADMISSION_WRITE_WAIT",
        "seconds a write may wait for a place within its class's limit before it gets 503",
        default=0.02,
    )
    admission_upload_wait: float = _env(
        "ADMISSION_UPLOAD_WAIT",
        "seconds an upload may wait for a place within its class's limit before it gets 503",
        default=0.02,
    )
    admission_loop_lag: float = _env(
        "ADMISSION_LOOP_LAG",
        "seconds the event loop may run behind before new reads are refused (a growing share, "
        "all at twice this); uploads and writes are refused from half of it",
        default=0.01,
    )
    admission_initial_limit: int = _env(
        "ADMISSION_INITIAL_LIMIT",
        "requests of a class one process admits at once when it starts (the limit then adapts)",
        default=32,
    )
    admission_min_limit: int = _env(
        "ADMISSION_MIN_LIMIT", "the least a class's limit falls to, per process", default=4
    )
    admission_max_limit: int = _env(
        "ADMISSION_MAX_LIMIT", "the most a class's limit rises to, per process", default=256
    )
    login_limit_per_address: int = _env(
        "LOGIN_LIMIT_PER_ADDRESS",
        "login attempts per minute from one client address, checked before any hashing",
        default=30,
    )
    login_limit_per_username: int = _env(
        "LOGIN_LIMIT_PER_USERNAME",
        "login attempts per minute for one username, from anywhere",
        default=10,
    )
    signup_limit_per_address: int = _env(
        "SIGNUP_LIMIT_PER_ADDRESS", "sign-ups per minute from one client address", default=10
    )
    trusted_proxies: str = _env(
        "TRUSTED_PROXIES",
        "comma-separated addresses or networks of the balancers whose X-Forwarded-For names the "
        "client (`make stack` sets 127.0.0.1); empty: the peer is the client",
        default="",
    )
    password_hash_time_cost: int = _env(
        "PASSWORD_HASH_TIME_COST", "argon2id passes over memory", default=3
    )
    password_hash_memory_kib: int = _env(
        "PASSWORD_HASH_MEMORY_KIB", "argon2id memory per hash, in KiB", default=65536
    )
    password_hash_workers: int = _env(
        "PASSWORD_HASH_WORKERS",
        "threads hashing passwords at once for logins, and as many for sign-ups",
        default=2,
    )
    password_hash_queue: int = _env(
        "PASSWORD_HASH_QUEUE",
        "logins (and, apart, sign-ups) that may wait for a hashing thread; more get 503",
        default=64,
    )

    max_unposted_media: int = _env(
        "MAX_UNPOSTED_MEDIA",
        "uploads one user may hold that no post uses yet; past it uploads get 409",
        default=50,
    )
    unposted_media_retention: float = _env(
        "UNPOSTED_MEDIA_RETENTION",
        "seconds an upload may wait for its post before the sweep deletes it and its objects",
        default=86400.0,
    )
    sweep_interval: float = _env(
        "SWEEP_INTERVAL",
        "seconds between runs of the orphan and unposted-media sweeps, run by one service "
        "process at a time (0: never; `python -m app sweep-orphans` still works)",
        default=600.0,
    )
    feed_query: str = _env(
        "FEED_QUERY",
        "the feed's SQL: monogram (two bounded strategies) or seed (the source design's JOIN, "
        "to watch it fail over HTTP)",
        default="monogram",
    )
    feed_mode: str = _env(
        "FEED_MODE",
        "pull (computed from follows on every read), push (timelines in Redis, filled on write by "
        "the workers' fan-out) or hybrid (push, but authors with WHALE_FOLLOWERS are pulled)",
        default="pull",
    )
    redis_url: str | None = _env(
        "REDIS_URL",
        "Redis or Valkey for the timelines; unset: `make run` starts valkey-server on "
        "LOCAL_REDIS_PORT",
        default=None,
        repr=False,
    )
    redis_timeout: float = _env(
        "REDIS_TIMEOUT",
        "seconds one Redis call may take before the feed falls back to the pull query",
        default=0.5,
    )
    redis_pool_size: int = _env(
        "REDIS_POOL_SIZE", "Redis connections per process, at most", default=32
    )
    timeline_length: int = _env(
        "TIMELINE_LENGTH",
        "posts kept in each follower's timeline (older pages are pulled)",
        default=800,
    )
    whale_followers: int = _env(
        "WHALE_FOLLOWERS",
        "followers from which an author's posts are not fanned out but pulled (FEED_MODE=hybrid)",
        default=10_000,
    )
    fanout_queue_name: str = _env(
        "FANOUT_QUEUE_NAME", "the SQS queue of the feed's fan-out jobs", default="monogram-fanout"
    )
    deletion_retry_interval: float = _env(
        "DELETION_RETRY_INTERVAL",
        "seconds between retries of the S3 deletes a delete could not finish (S3 down), run by "
        "one service process at a time (0: never)",
        default=60.0,
    )
    max_upload_bytes: int = _env(
        "MAX_UPLOAD_BYTES", "largest upload body accepted (413 past it)", default=10 * 1024 * 1024
    )
    max_image_pixels: int = _env(
        "MAX_IMAGE_PIXELS",
        "largest image accepted, width x height (422 past it)",
        default=50_000_000,
    )
    upload_memory_budget: int = _env(
        "UPLOAD_MEMORY_BUDGET",
        "bytes of upload bodies one process holds at once (the seed's 2 MB x 50 uploads)",
        default=100 * 1024 * 1024,
    )
    upload_budget_wait: float = _env(
        "UPLOAD_BUDGET_WAIT",
        "seconds an upload waits for room in the budget before it gets 503",
        default=0.5,
    )
    upload_min_rate: int = _env(
        "UPLOAD_MIN_RATE",
        "bytes per second an upload body must keep up after UPLOAD_RATE_GRACE (408 below it)",
        default=16 * 1024,
    )
    upload_rate_grace: float = _env(
        "UPLOAD_RATE_GRACE", "seconds before UPLOAD_MIN_RATE is enforced", default=5.0
    )
    thumbnail_workers: int = _env(
        "THUMBNAIL_WORKERS",
        "image worker processes; 0: one per usable CPU (a container's CPU limit counts)",
        default=0,
    )
    thumbnail_warm_start: bool = _env(
        "THUMBNAIL_WARM_START",
        "start every image worker at boot (else at the first uploads)",
        default=True,
    )
    thumbnail_queue: int = _env(
        "THUMBNAIL_QUEUE", "images being processed or waiting for a worker, at most", default=32
    )
    thumbnail_queue_wait: float = _env(
        "THUMBNAIL_QUEUE_WAIT",
        "seconds an admitted upload may wait for a place in THUMBNAIL_QUEUE before it gets 503 "
        "(a backstop: admission refuses those predicted to wait past IMAGE_WAIT_BUDGET)",
        default=1.0,
    )
    image_wait_budget: float = _env(
        "IMAGE_WAIT_BUDGET",
        "seconds a V0 upload may be predicted to wait for an image worker; one predicted to "
        "wait longer gets 503 before its body is read (ADMISSION_CONTROL=false: no prediction)",
        default=0.4,
    )
    image_worker_scheduling: str = _env(
        "IMAGE_WORKER_SCHEDULING",
        "nice: image workers run at nice 10, a tenth of a busy core's share; idle: under "
        "SCHED_IDLE, only on cores nothing else wants (the feed's p99 varied more under it: "
        "docs/design.md)",
        default="nice",
    )

    upload_url_ttl: int = _env(
        "UPLOAD_URL_TTL",
        "seconds a presigned upload (POST /v1/uploads) may be used to send the file to S3",
        default=600,
    )
    abandoned_upload_grace: float = _env(
        "ABANDONED_UPLOAD_GRACE",
        "seconds after a presigned upload expires before the sweep deletes what was sent "
        "and never completed (completing it then is 410)",
        default=3600.0,
    )
    upload_origins: str = _env(
        "UPLOAD_ORIGINS",
        "comma-separated origins whose pages may POST presigned uploads to the bucket (its CORS "
        "rule); empty: the service's own, http://HOST:PORT (and http://localhost:PORT)",
        default="",
    )
    sqs_endpoint_url: str | None = _env(
        "SQS_ENDPOINT_URL",
        "SQS endpoint of the media job queue; unset: S3_ENDPOINT_URL when that is set (moto "
        "serves both), else AWS's for S3_REGION",
        default=None,
    )
    sqs_queue_name: str = _env(
        "SQS_QUEUE_NAME", "the media job queue, made if missing", default="monogram-media"
    )
    media_workers: int = _env(
        "MEDIA_WORKERS",
        "`python -m app worker` processes `make run` and `make stack` start for V1 uploads",
        default=1,
    )
    job_visibility_timeout: int = _env(
        "JOB_VISIBILITY_TIMEOUT",
        "seconds a media job is hidden from other workers once taken: a worker that dies "
        "mid-job has its job taken again after this long",
        default=60,
    )
    job_max_attempts: int = _env(
        "JOB_MAX_ATTEMPTS",
        "times a media job is tried (with growing, jittered pauses) before its media is failed",
        default=5,
    )
    processing_timeout: float = _env(
        "PROCESSING_TIMEOUT",
        "seconds a media may stay processing since its job was queued before the sweep queues "
        "it again (a lost message, a queue restarted empty)",
        default=600.0,
    )

    local_dir: Path = _env(  # noqa: RUF009 (a Path is immutable)
        "LOCAL_DIR",
        "where the embedded stack keeps PostgreSQL's data, S3 objects and secrets",
        default=Path(".local"),
    )
    local_pg_port: int = _env(
        "LOCAL_PG_PORT", "port of the embedded PostgreSQL (127.0.0.1 only)", default=55432
    )
    local_s3_port: int = _env(
        "LOCAL_S3_PORT", "port of the embedded S3 (moto, 127.0.0.1 only)", default=9000
    )
    local_redis_port: int = _env(
        "LOCAL_REDIS_PORT", "port of the embedded valkey-server (127.0.0.1 only)", default=56379
    )
    local_edge_port: int = _env(
        "LOCAL_EDGE_PORT",
        "port of `make stack`'s edge cache (Varnish, 127.0.0.1 only) in front of the S3 origin",
        default=9080,
    )
    local_edge_memory: str = _env(
        "LOCAL_EDGE_MEMORY", "what `make stack`'s Varnish may hold in memory", default="256m"
    )
    local_s3_sync_interval: float = _env(
        "LOCAL_S3_SYNC_INTERVAL",
        "seconds between copies of the embedded S3's objects to LOCAL_DIR",
        default=2.0,
    )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"PORT must be 1-65535, not {self.port}")
        if self.service_processes < 1:
            raise SettingsError("SERVICE_PROCESSES must be at least 1")
        if self.db_pool_max < 1:
            raise SettingsError(
                "DB_MAX_CONNECTIONS minus DB_RESERVED_CONNECTIONS leaves no connection "
                f"for each of the {self.service_processes} service processes"
            )
        for name in (
            "db_acquire_timeout",
            "db_connect_timeout",
            "db_command_timeout",
            "s3_timeout",
            "s3_deadline",
            "request_deadline",
            "idle_timeout",
            "readiness_timeout",
            "shutdown_timeout",
            "local_s3_sync_interval",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be a positive number of seconds")
        if self.sweep_interval < 0:
            raise SettingsError("SWEEP_INTERVAL must be 0 (never) or more seconds")
        if self.feed_query not in FEED_QUERIES:
            raise SettingsError(f"FEED_QUERY must be monogram or seed, not {self.feed_query!r}")
        if self.image_worker_scheduling not in ("idle", "nice"):
            raise SettingsError(
                "IMAGE_WORKER_SCHEDULING must be idle or nice, "
                f"not {self.image_worker_scheduling!r}"
            )
        if self.feed_mode not in FEED_MODES:
            raise SettingsError(f"FEED_MODE must be pull, push or hybrid, not {self.feed_mode!r}")
        if self.timeline_length < 1 or self.whale_followers < 1 or self.redis_pool_size < 1:
            raise SettingsError(
                "TIMELINE_LENGTH, WHALE_FOLLOWERS and REDIS_POOL_SIZE must be at least 1"
            )
        if self.deletion_retry_interval < 0:
            raise SettingsError("DELETION_RETRY_INTERVAL must be 0 (never) or more seconds")
        if self.unposted_media_retention <= 0 or self.max_unposted_media <= 0:
            raise SettingsError("UNPOSTED_MEDIA_RETENTION and MAX_UNPOSTED_MEDIA must be positive")
        if self.auth_cache_seconds < 0:
            raise SettingsError("AUTH_CACHE_SECONDS must be 0 or more")
        if self.shutdown_drain < 0:
            raise SettingsError("SHUTDOWN_DRAIN must be 0 or more seconds")
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise SettingsError("JWT_SECRET must be at least 32 characters (HS256 needs 256 bits)")
        for name in (
            "jwt_ttl",
            "rate_limit_per_second",
            "rate_limit_burst",
            "admission_read_target",
            "admission_write_target",
            "admission_upload_target",
            "admission_read_wait",
            "admission_write_wait",
            "admission_upload_wait",
            "admission_loop_lag",
            "admission_min_limit",
            "thumbnail_queue_wait",
            "password_hash_time_cost",
            "password_hash_workers",
            "password_hash_queue",
            "login_limit_per_address",
            "login_limit_per_username",
            "signup_limit_per_address",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be positive")
        if self.image_wait_budget < 0:
            raise SettingsError("IMAGE_WAIT_BUDGET must be 0 or more seconds")
        if not self.admission_min_limit <= self.admission_max_limit:
            raise SettingsError("ADMISSION_MIN_LIMIT must not be over ADMISSION_MAX_LIMIT")
        try:
            parse_networks(self.trusted_proxies)
        except ValueError:
            raise SettingsError(
                f"TRUSTED_PROXIES must be addresses or networks, not {self.trusted_proxies!r}"
            ) from None
        for name in (
            "max_upload_bytes",
            "max_image_pixels",
            "upload_memory_budget",
            "upload_min_rate",
            "thumbnail_queue",
            "upload_budget_wait",
            "thumbnail_queue_wait",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be positive")
        if self.upload_memory_budget < self.max_upload_bytes:
            raise SettingsError(
                "UPLOAD_MEMORY_BUDGET must hold at least one MAX_UPLOAD_BYTES upload"
            )
        for name in (
            "upload_url_ttl",
            "abandoned_upload_grace",
            "media_workers",
            "job_visibility_timeout",
            "job_max_attempts",
            "processing_timeout",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be positive")
        if self.thumbnail_workers < 0:
            raise SettingsError("THUMBNAIL_WORKERS must be 0 (one per usable CPU) or more")
        if self.password_hash_memory_kib < 1024:
            raise SettingsError("PASSWORD_HASH_MEMORY_KIB must be at least 1024")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}"
            )

    @property
    def db_pool_max(self) -> int:
        """This process's share of the server's connections.

        N processes times this never exceeds max_connections minus the reserve.
        """
        usable = self.db_max_connections - self.db_reserved_connections
        return usable // self.service_processes

    @property
    def public_base_url(self) -> str:
        if self.s3_public_base_url:
            return self.s3_public_base_url.rstrip("/")
        endpoint = self.s3_endpoint_url or f"https://s3.{self.s3_region}.amazonaws.com"
        return f"{endpoint.rstrip('/')}/{self.s3_bucket}"

    @property
    def image_url_prefix(self) -> str:
        return (self.image_base_url or self.public_base_url).rstrip("/")

    @property
    def upload_origins_list(self) -> list[str]:
        origins = [o.strip().rstrip("/") for o in self.upload_origins.split(",") if o.strip()]
        if origins:
            return origins
        own = [f"http://{self.host}:{self.port}"]
        if self.host in {"127.0.0.1", "0.0.0.0"}:  # noqa: S104 - names, not a bind
            own.append(f"http://localhost:{self.port}")
        return own

    @property
    def queue_endpoint_url(self) -> str | None:
        """Where the media job queue is: SQS_ENDPOINT_URL, else the S3 endpoint if one is set
        (moto serves both), else AWS's (None: botocore finds it from the region)."""
        return self.sqs_endpoint_url or self.s3_endpoint_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.metadata["env"], raw, f.default)
        return cls(**values)

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for a child process."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[f.metadata["env"]] = str(value)
        return env


def _env_name(field_name: str) -> str:
    by_name = {f.name: f.metadata["env"] for f in dataclasses.fields(Settings)}
    return str(by_name[field_name])


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {type(default).__name__}, not {raw!r}") from None
    return raw


def env_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = "unset" if f.default is None else str(f.default)
        rows.append((f.metadata["env"], default, f.metadata["doc"]))
    return rows


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
