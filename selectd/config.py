"""The one TOML config, parsed by pydantic models.

Unknown keys are errors everywhere. ``load_config`` applies ``--set key.path=value`` overrides
before validation, and :func:`explain` turns a ``ValidationError`` into one line per problem
naming the key path (``stages[1].options.model_dir: ...``). Secrets (SASL password, SSL key
password) may be given as ``{ env = "NAME" }`` or ``{ file = "/run/secrets/x" }`` instead of a
literal, and are held as ``SecretStr`` so they never print.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError,
                      field_validator, model_validator)

from selectd.dedup.stage import StoreConfig
from selectd.records import OUTPUT_ROOM_BYTES, RECORD_OVERHEAD_BYTES
from selectd.thresholds import Rule


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_secret(value: Any) -> Any:
    """``{env = "NAME"}`` / ``{file = "PATH"}`` → the secret's text; plain strings pass through."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = value["env"]
            if name not in os.environ:
                raise ValueError(f"environment variable {name!r} is not set")
            return os.environ[name]
        if set(value) == {"file"}:
            try:
                return Path(value["file"]).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read secret file {value['file']!r}: {exc.strerror}") from None
        raise ValueError("a secret is a string, {env = \"NAME\"} or {file = \"PATH\"}")
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


def _not_dots(name: str) -> str:
    if name in (".", ".."):
        raise ValueError(f"topic name {name!r} is not allowed")
    return name


#: Kafka's legal topic names; kafka-python raises a plain ValueError for others at the first send,
#: which would stop the daemon mid-stream instead of failing the config
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$"), AfterValidator(_not_dots)]


def _split_commas(value: Any) -> Any:
    """Kafka's own list form, "host:port,host:port" or "topic-a,topic-b", as a list (what one shared
    setting feeds to the daemon's ``--set``, KEDA's trigger and ``kafka-topics.sh`` alike)."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


#: the Kafka clients the daemon runs on: kafka-python (pure Python, the default) and confluent-kafka
#: (librdkafka, the extra ``selectd[confluent]``)
KafkaClient = Literal["kafka-python", "confluent-kafka"]

#: [kafka] values one client refuses although the other takes them: the largest each client accepts
#: (librdkafka's ranges of socket.timeout.ms, session.timeout.ms, max.poll.interval.ms, fetch.max.bytes,
#: max.partition.fetch.bytes, linger.ms, message.max.bytes, message.timeout.ms; kafka-python wants
#: request_timeout_ms below its connections_max_idle_ms of 540 s). Checked by :func:`kafka_problems`,
#: so check-config names the key rather than the client failing at start.
CLIENT_MAXIMA: dict[str, dict[str, int]] = {
    "kafka-python": {"request_timeout_ms": 539_999},
    "confluent-kafka": {"request_timeout_ms": 300_000, "session_timeout_ms": 3_600_000,
                        "max_poll_interval_ms": 86_400_000, "fetch_max_bytes": 2_147_483_135,
                        "max_partition_fetch_bytes": 1_000_000_000, "linger_ms": 900_000,
                        "max_request_size": 1_000_000_000, "delivery_timeout_ms": 2_147_483_647},
}


#: a list of brokers or topics: a TOML list, or one comma-separated string
CommaList = BeforeValidator(_split_commas)


class KafkaSection(Section):
    client: KafkaClient = Field(
        default="kafka-python", description="confluent-kafka (librdkafka) needs pip install 'selectd[confluent]'")
    bootstrap_servers: Annotated[list[str], CommaList] = Field(
        min_length=1, description="host:port of brokers: a list, or one comma-separated string")
    group_id: str = Field(min_length=1)
    input_topics: Annotated[list[TopicName], CommaList] = Field(
        min_length=1, description="topics to consume: a list, or one comma-separated string")
    client_id: str = "selectd"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000,
                                      description="also the group rebalance timeout; a join waits about this long")
    fetch_max_bytes: int = Field(default=52_428_800, ge=1024)
    max_partition_fetch_bytes: int = Field(default=1_048_576, ge=1024)
    request_timeout_ms: int = Field(default=30_000, ge=1000, description="also one connection attempt at start")
    # producer
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    linger_ms: int = Field(default=5, ge=0)
    max_request_size: int = Field(default=1_048_576, ge=1024, description="producer limit per message")
    producer_batch_size: int = Field(default=1_000_000, ge=1024,
                                     description="producer bytes per partition batch, at most max_request_size")
    delivery_timeout_ms: int = Field(default=120_000, ge=1000)
    enable_idempotence: bool = Field(default=True, description="no duplicates from the producer's own retries")
    # security
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: Secret | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security_is_complete(self) -> "KafkaSection":
        if self.security_protocol.startswith("SASL"):
            missing = [k for k in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self


def kafka_problems(kafka: KafkaSection) -> list[str]:
    """[kafka] values that contradict each other, or that the chosen client refuses although the other
    takes them (:data:`CLIENT_MAXIMA`, :data:`CLIENT_RULES`): one line per key, naming it."""
    problems = []
    if kafka.producer_batch_size > kafka.max_request_size:
        problems.append(f"kafka.producer_batch_size: {kafka.producer_batch_size} is over kafka.max_request_size "
                        f"({kafka.max_request_size}): a batch goes out in one request")
    chosen = f'kafka.client = "{kafka.client}"'
    for key, most in CLIENT_MAXIMA[kafka.client].items():
        value = getattr(kafka, key)
        if value > most:
            others = "; ".join(f"{client} takes up to {maxima[key]}" if key in maxima else f"{client} takes it"
                               for client, maxima in CLIENT_MAXIMA.items() if client != kafka.client)
            problems.append(f"kafka.{key}: {value} is over {most}, the most {chosen} takes ({others})")
    for client, key, holds, needs in CLIENT_RULES:
        if client == kafka.client and not holds(kafka):
            problems.append(f"kafka.{key}: {getattr(kafka, key)} {needs} with {chosen}")
    return problems


#: (client, key, check, what it needs): how one client wants [kafka] keys to relate where the other
#: does not mind (the clients refuse to start otherwise)
CLIENT_RULES = [
    ("kafka-python", "delivery_timeout_ms", lambda k: k.delivery_timeout_ms > k.linger_ms + k.request_timeout_ms,
     "must exceed kafka.linger_ms + kafka.request_timeout_ms"),
    ("confluent-kafka", "delivery_timeout_ms", lambda k: k.delivery_timeout_ms > k.linger_ms, "must exceed kafka.linger_ms"),
    ("confluent-kafka", "max_poll_interval_ms", lambda k: k.max_poll_interval_ms >= k.session_timeout_ms,
     "must be at least kafka.session_timeout_ms"),
]


class TopicsSection(Section):
    accepted: TopicName = Field(description="default topic for accepted documents")
    rejected: TopicName
    dlq: TopicName
    attributes: TopicName | None = Field(default=None, description="Dolma-style attribute records; off when unset")


class InputSection(Section):
    id_key: str = Field(default="id", min_length=1, description="field of the document id (datatrove's id_key)")
    text_key: str = Field(default="text", min_length=1, description="field of the document text (datatrove's and "
                          "NeMo Curator's text_key)")
    max_text_bytes: int = Field(default=1_000_000, ge=1, description="UTF-8 bytes of the text; larger goes to the DLQ")
    max_message_bytes: int = Field(default=1_000_000, ge=1, description="raw message value bytes; larger goes to the "
                                   "DLQ; keep it below what the producer can send (kafka.max_request_size)")


class BatchSection(Section):
    max_docs: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=8_388_608, ge=1024)
    linger_ms: int = Field(default=100, ge=0, description="wait at most this long to fill a batch")


class DeliverySection(Section):
    drain_timeout_s: float = Field(default=30.0, gt=0, description="SIGTERM: finish, deliver and commit within this")
    produce_retries: int = Field(default=3, ge=0, description="re-sends of a failed output before dead-lettering it")
    retry_backoff_s: float = Field(default=0.5, ge=0)
    broker_backoff_max_s: float = Field(default=30.0, gt=0, description="cap of the reconnect backoff while the broker is down")


class MetricsSection(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port")
    lag_interval_s: float = Field(default=10.0, gt=0, description="how often consumer lag is refreshed")
    stall_timeout_s: float = Field(default=600.0, ge=0, description="/healthz fails when work has waited this long "
                                   "with no batch committed or retried while the broker is up (0: never)")


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    progress_interval_s: float = Field(default=30.0, gt=0, description="period of the progress log line")


class SelectionConfig(Section):
    """Streaming selection on one signal: keep the top ``keep_fraction`` of the stream."""
    signal: str
    keep_fraction: float = Field(gt=0, le=1)
    method: Literal["running_quantile", "window_top"] = Field(
        default="running_quantile", description="window_top: the top fraction of each batch reaching the stage")
    weight: Literal["docs", "chars"] = Field(default="docs", description="chars: fraction of characters (PreSelect)")
    warmup_docs: int = Field(default=1000, ge=0, description="running_quantile: keep everything until this many seen")
    reason: str = "below_selection_threshold"


class StageConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="stage name; prefixes its signals")
    type: str = Field(description="scorer kind, see `selectd check-config --list-scorers`")
    enabled: bool = True
    shadow: bool = Field(default=False, description="score and report what the stage would decide, never act on it")
    options: dict[str, Any] = Field(default_factory=dict, description="the scorer's own options")
    rules: list[Rule] | None = Field(default=None, description="replaces the scorer's default rules")
    select: SelectionConfig | None = None

    @field_validator("type")
    @classmethod
    def _known_scorer(cls, kind: str) -> str:
        from selectd.scorers.base import scorer_class

        scorer_class(kind)  # raises with the list of known types
        return kind


class DriftSection(Section):
    """Score drift: each numeric signal's live distribution against a reference, as a PSI gauge.
    Read at start: a SIGHUP reload keeps the running settings and references."""
    reference: Path | None = Field(default=None, description="a profile written by `selectd score --profile`; "
                                   "unset: the first reference_docs documents each stage scores after start")
    reference_docs: int = Field(default=5000, ge=100, description="documents in the reference when no file is given")
    window_docs: int = Field(default=2000, ge=100, description="documents in the live window compared with the reference")
    bound: float = Field(default=0.25, gt=0, description="PSI above this fires SelectdScoreDrift (exported as a gauge)")


class RouteConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    topic: TopicName
    when: list[Rule] = Field(default_factory=list, description="all must pass; signals as stage.signal")


class Config(Section):
    plugins: list[str] = Field(default_factory=list, description="Python modules imported first; they may register scorers")
    kafka: KafkaSection
    topics: TopicsSection
    metrics: MetricsSection = MetricsSection()
    input: InputSection = InputSection()
    batch: BatchSection = BatchSection()
    delivery: DeliverySection = DeliverySection()
    logging: LoggingSection = LoggingSection()
    stages: list[StageConfig] = Field(default_factory=list)
    dedup: StoreConfig = Field(default_factory=StoreConfig, description="the store of the exact_dedup / minhash_dedup stages")
    drift: DriftSection | None = Field(default=None, description="off when the table is absent")
    routes: list[RouteConfig] = Field(default_factory=list, description="first match wins; else topics.accepted")
    #: sha256 of the effective config (file plus overrides), for outputs and the info metric
    _digest: str = PrivateAttr(default="")

    @property
    def digest(self) -> str:
        return self._digest

    def limit_warnings(self) -> list[str]:
        """Limits that contradict each other without making the config unusable (``check-config``
        prints them, ``run`` logs them)."""
        sendable = self.kafka.max_request_size - RECORD_OVERHEAD_BYTES - OUTPUT_ROOM_BYTES
        if self.input.max_message_bytes > sendable:
            return [f"input.max_message_bytes ({self.input.max_message_bytes}) exceeds what the producer can send: "
                    f"kafka.max_request_size ({self.kafka.max_request_size}) less {RECORD_OVERHEAD_BYTES + OUTPUT_ROOM_BYTES} "
                    f"bytes for record overhead, headers and the selectd object = {sendable}; larger inputs are "
                    f"scored, then dead-lettered cut to fit (produce_failed). Lower input.max_message_bytes or raise "
                    f"kafka.max_request_size (and the broker's message.max.bytes)"]
        return []

    @field_validator("stages")
    @classmethod
    def _stage_names_unique(cls, stages: list[StageConfig]) -> list[StageConfig]:
        seen: set[str] = set()
        for stage in stages:
            if stage.name in seen:
                raise ValueError(f"two stages are named {stage.name!r}")
            seen.add(stage.name)
        return stages

    @model_validator(mode="after")
    def _route_signals_exist(self) -> "Config":
        # a shadow stage never routes: its signals are not in the verdict routes read
        stage_names = {s.name for s in self.stages if s.enabled and not s.shadow}
        for route in self.routes:
            for rule in route.when:
                stage = rule.signal.split(".", 1)[0]
                if "." not in rule.signal or stage not in stage_names:
                    raise ValueError(f"route {route.name!r}: signal {rule.signal!r} must be '<stage>.<signal>' "
                                     f"of an enabled, live stage ({', '.join(sorted(stage_names)) or 'none'})")
        return self


#: keys that existed once, by path (list indices as ``[]``), with what to do instead: check-config says
#: so rather than "unknown key"
REMOVED_KEYS = {
    "stages[].select.window": "removed: window_top's window is the batch reaching the stage (size it with "
                              "batch.max_docs); delete this key",
}


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is one line per problem, each naming its key path."""


def _path(loc: tuple[Any, ...], any_index: bool = False) -> str:
    """``stages[1].options.model_dir`` (the form ``--set`` takes); with ``any_index``, ``stages[].options.model_dir``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += "[]" if any_index else f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def explain(error: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    lines = []
    for item in error.errors():
        # Drop pydantic's internal validator names (e.g. "function-after[...]") from the path.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = REMOVED_KEYS.get(_path(prefix + loc, any_index=True), "unknown key")
        lines.append(f"{_path(prefix + loc)}: {message}")
    return "\n".join(lines)


#: one step of a key path: a name, then any ``[index]``es (``stages[0]``), or a bare index (``stages.0``)
_KEY_STEP = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_-]*)?(?P<indices>(?:\[\d+\])*)")


def parse_key_path(text: str) -> tuple[str | int, ...]:
    """``stages[0].options.model_dir`` or ``stages.0.options.model_dir`` → ("stages", 0, "options",
    "model_dir"): the path syntax of error messages, and the dotted one some tools write."""
    parts: list[str | int] = []
    for step in text.strip().split("."):
        match = _KEY_STEP.fullmatch(step)
        if step.isdigit() and parts:
            parts.append(int(step))
        elif match and match.group("name"):
            parts.append(match.group("name"))
            parts += [int(index) for index in re.findall(r"\d+", match.group("indices"))]
        else:
            raise ConfigError(f"--set {text!r}: not a key path (e.g. kafka.group_id, stages[0].enabled)")
    return tuple(parts)


def parse_override(text: str) -> tuple[tuple[str | int, ...], Any]:
    """``a.b[0].c=value`` → (("a", "b", 0, "c"), value); the value is read as TOML if it parses, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parse_key_path(key), value


def apply_override(data: dict[str, Any], path: Sequence[str | int], value: Any) -> None:
    """Set ``path`` (from :func:`parse_key_path`) in the parsed TOML: missing tables are created, list
    entries must exist. Errors name the path as ``--set`` takes it."""
    path = tuple(int(part) if isinstance(part, str) and part.isdigit() else part for part in path)
    node: Any = data
    for i, part in enumerate(path):
        if isinstance(node, list):
            if not isinstance(part, int):
                raise ConfigError(f"--set {_path(path)}: {_path(path[:i])} is a list: index it, e.g. {_path(path[:i])}[0]")
            if part >= len(node):
                raise ConfigError(f"--set {_path(path)}: {_path(path[:i])} has {len(node)} entries")
        elif isinstance(part, int):
            raise ConfigError(f"--set {_path(path)}: {_path(path[:i])} is a table, not a list")
        if i == len(path) - 1:
            node[part] = value
            return
        if isinstance(node, dict) and part not in node:
            if isinstance(path[i + 1], int):
                raise ConfigError(f"--set {_path(path)}: {_path(path[:i + 1])} is not set; set the whole list, "
                                  f"e.g. {_path(path[:i + 1])}=[...]")
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {_path(path)}: {_path(path[:i + 1])} is not a table")


def _import_plugins(data: dict[str, Any]) -> None:
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list):
        return  # pydantic reports the type error with its path
    for index, module in enumerate(plugins):
        try:
            importlib.import_module(str(module))
        except Exception as exc:  # a plugin failing to import is a config error, whatever it raised
            raise ConfigError(f"plugins[{index}]: cannot import {module!r}: {exc!r}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    _import_plugins(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain(exc)) from None
    from selectd.scorers.base import scorer_class

    problems = kafka_problems(config.kafka)
    # Each scorer validates its own options table; errors keep the full key path.
    for index, stage in enumerate(config.stages):
        scorer_type = scorer_class(stage.type)
        try:
            scorer_type.Options.model_validate(stage.options)
        except ValidationError as exc:
            problems.append(explain(exc, ("stages", index, "options")))
        if stage.shadow and scorer_type.shadow_refused:
            problems.append(f"stages[{index}].shadow: a {stage.type} stage cannot be a shadow stage: "
                            f"{scorer_type.shadow_refused}")
    if problems:
        raise ConfigError("\n".join(problems))
    config._digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return config


def load_config(path: Path | str, overrides: list[str] = ()) -> Config:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for item in overrides:
        apply_override(data, *parse_override(item))
    return config_from_dict(data)
