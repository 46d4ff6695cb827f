"""Client settings from the ``[kafka]`` (and ``[batch]``) config, for both clients, in one place:
keyword arguments of kafka-python's admin client, consumer and producer (with the codecs they need
and how a client is opened), and librdkafka properties of confluent-kafka's consumer and producer.
Every ``[kafka]`` key reaches both clients:

=========================  ===============================  ==============================================
[kafka] key                kafka-python                     librdkafka (confluent-kafka)
=========================  ===============================  ==============================================
bootstrap_servers          bootstrap_servers (list)         bootstrap.servers (comma-joined)
client_id                  client_id                        client.id
request_timeout_ms         request_timeout_ms               socket.timeout.ms (+ producer request.timeout.ms)
group_id                   group_id                         group.id
auto_offset_reset          auto_offset_reset                auto.offset.reset
session_timeout_ms         session_timeout_ms               session.timeout.ms
heartbeat_interval_ms      heartbeat_interval_ms            heartbeat.interval.ms
max_poll_interval_ms       max_poll_interval_ms             max.poll.interval.ms (>= session.timeout.ms)
fetch_max_bytes            fetch_max_bytes                  fetch.max.bytes
max_partition_fetch_bytes  max_partition_fetch_bytes        max.partition.fetch.bytes
compression_type           compression_type (none: None)    compression.type
linger_ms                  linger_ms                        linger.ms
max_request_size           max_request_size                 message.max.bytes
producer_batch_size        batch_size                       batch.size
delivery_timeout_ms        delivery_timeout_ms              message.timeout.ms
enable_idempotence         enable_idempotence               enable.idempotence
security_protocol          security_protocol                security.protocol
sasl_mechanism             sasl_mechanism                   sasl.mechanism
sasl_username / _password  sasl_plain_username / _password  sasl.username / sasl.password
ssl_cafile                 ssl_cafile                       ssl.ca.location (unset: "probe")
ssl_certfile / ssl_keyfile ssl_certfile / ssl_keyfile       ssl.certificate.location / ssl.key.location
ssl_password               ssl_password                     ssl.key.password
ssl_check_hostname         ssl_check_hostname               ssl.endpoint.identification.algorithm https|none
=========================  ===============================  ==============================================

``input_topics`` is the subscription of either consumer, ``client`` picks the client
(:mod:`selectd.kafka.clients`). Values one client refuses although the other takes them are config
errors naming the key (:func:`selectd.config.kafka_problems`). Both producers acknowledge with
``acks=all`` and partition keyed records as the Java client does (murmur2), so a key lands on the same
partition whichever client produced it.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any

from kafka.errors import KafkaError

from selectd.config import Config, KafkaSection
from selectd.kafka.base import BrokerError


def opening(make):
    """``make()`` a kafka-python client. kafka-python's retriable errors (brokers unreachable, bootstrap
    timed out), which another attempt may not meet, become :class:`BrokerError`; others propagate."""
    try:
        return make()
    except KafkaError as exc:
        if exc.retriable:
            raise BrokerError(repr(exc)) from exc
        raise


def connection_kwargs(kafka: KafkaSection) -> dict[str, Any]:
    """Brokers, client id, request timeout and TLS / SASL: what every client needs."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "request_timeout_ms": kafka.request_timeout_ms,
        # one connection attempt at start; the daemon logs it and tries again (selectd.app.connect)
        "bootstrap_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_check_hostname"] = kafka.ssl_check_hostname
        files = {"ssl_cafile": kafka.ssl_cafile, "ssl_certfile": kafka.ssl_certfile, "ssl_keyfile": kafka.ssl_keyfile}
        kwargs.update({name: str(path) for name, path in files.items() if path is not None})
        if kafka.ssl_password is not None:
            kwargs["ssl_password"] = kafka.ssl_password.get_secret_value()
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return kwargs


def consumer_kwargs(config: Config) -> dict[str, Any]:
    """A group member that commits by hand (the commit protocol), fetching up to a batch per poll."""
    kafka = config.kafka
    return {
        **connection_kwargs(kafka),
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "fetch_max_bytes": kafka.fetch_max_bytes,
        "max_partition_fetch_bytes": kafka.max_partition_fetch_bytes,
        "max_poll_records": config.batch.max_docs,
    }


def producer_kwargs(kafka: KafkaSection) -> dict[str, Any]:
    """An idempotent producer acknowledged by all in-sync replicas."""
    return {
        **connection_kwargs(kafka),
        "acks": "all",
        "compression_type": None if kafka.compression_type == "none" else kafka.compression_type,
        "linger_ms": kafka.linger_ms,
        "batch_size": kafka.producer_batch_size,
        "max_request_size": kafka.max_request_size,
        "delivery_timeout_ms": kafka.delivery_timeout_ms,
        "enable_idempotence": kafka.enable_idempotence,
        "max_block_ms": 10_000,
    }


#: kafka-python's codecs beyond gzip, and the package each needs
CODEC_PACKAGES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}


def codec_problems(kafka: KafkaSection) -> list[str]:
    """``compression_type`` names a codec whose library kafka-python does not find (the producer
    would refuse to start)."""
    from kafka import codec

    kind = kafka.compression_type
    if kind in CODEC_PACKAGES and not getattr(codec, f"has_{kind}")():
        return [f"kafka.compression_type: {kind!r} needs the {CODEC_PACKAGES[kind]} package, which is not installed "
                f"(pip install 'selectd[codecs]')"]
    return []


class RepeatFilter(logging.Filter):
    """Lets a line through at most once per ``interval_s`` for each kind of line (its level, message
    and error with the digits left out: ports, timings, counters). librdkafka reconnects to a broker
    that is down every 100 ms or so at first and logs each try, twice (its log and ``error_cb``):
    without this a broker down for an hour would write millions of lines."""

    def __init__(self, interval_s: float = 30.0, clock=time.monotonic):
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._last: dict[tuple, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, _DIGITS.sub("", record.getMessage()), _DIGITS.sub("", str(getattr(record, "error", ""))))
        now = self.clock()
        if now - self._last.get(key, float("-inf")) < self.interval_s:
            return False
        self._last[key] = now
        return True


_DIGITS = re.compile(r"\d+")
librdkafka_log = logging.getLogger("selectd.librdkafka")
librdkafka_log.addFilter(RepeatFilter())


def log_client_error(error) -> None:
    """librdkafka's client-wide errors (``error_cb``: brokers down, TLS or SASL failing), which it
    retries by itself and never raises; served inside consume / poll / flush on the calling thread."""
    librdkafka_log.warning("kafka client error", extra={"error": error.str(), "code": error.name(),
                                                        "fatal": error.fatal()})


def librdkafka_connection(kafka: KafkaSection) -> dict[str, Any]:
    """librdkafka properties every confluent-kafka client needs: brokers, client id, timeouts, TLS / SASL,
    its log lines through Python logging (the daemon's log format) and its client-wide errors logged."""
    settings: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap_servers),
        "client.id": kafka.client_id,
        "socket.timeout.ms": kafka.request_timeout_ms,
        "security.protocol": kafka.security_protocol.lower(),
        "logger": librdkafka_log,
        "error_cb": log_client_error,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        # The wheel links its own OpenSSL, whose built-in CA path is not the system's: without a CA file,
        # "probe" makes librdkafka look in the usual system locations (kafka-python uses the system store).
        settings["ssl.ca.location"] = str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else "probe"
        if kafka.ssl_certfile is not None:
            settings["ssl.certificate.location"] = str(kafka.ssl_certfile)
        if kafka.ssl_keyfile is not None:
            settings["ssl.key.location"] = str(kafka.ssl_keyfile)
        if kafka.ssl_password is not None:
            settings["ssl.key.password"] = kafka.ssl_password.get_secret_value()
        settings["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else "none"
    if kafka.security_protocol.startswith("SASL"):
        settings["sasl.mechanism"] = kafka.sasl_mechanism
        settings["sasl.username"] = kafka.sasl_username
        settings["sasl.password"] = kafka.sasl_password.get_secret_value()
    return settings


def librdkafka_consumer(config: Config) -> dict[str, Any]:
    """A group member that commits by hand (the commit protocol), as :func:`consumer_kwargs`."""
    kafka = config.kafka
    return {
        **librdkafka_connection(kafka),
        "group.id": kafka.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": kafka.auto_offset_reset,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "max.poll.interval.ms": kafka.max_poll_interval_ms,
        "fetch.max.bytes": kafka.fetch_max_bytes,
        "max.partition.fetch.bytes": kafka.max_partition_fetch_bytes,
        # prefetch about two batches: enough to keep batches full, and what a pause during a slow batch
        # drops to fetch again (confluent_source.py); librdkafka's default is 64 MB. Once the queue
        # is that full, fetching waits fetch.queue.backoff.ms before it looks again: librdkafka's 1 s
        # would starve a fast pipeline (measured: no stages at 7,300 docs/s instead of ~25,000).
        "queued.max.messages.kbytes": max(1024, 2 * config.batch.max_bytes // 1024),
        "fetch.queue.backoff.ms": 10,
        # librdkafka wants fetch.max.bytes >= message.max.bytes on a consumer too (default 1,000,000);
        # a consumer never produces, so its message.max.bytes only has to pass that check.
        "message.max.bytes": min(1_000_000, kafka.fetch_max_bytes),
        # kafka-python's (and the Java client's) default; librdkafka's own is read_committed
        "isolation.level": "read_uncommitted",
    }


def librdkafka_producer(kafka: KafkaSection) -> dict[str, Any]:
    """A producer acknowledged by all in-sync replicas, idempotent unless ``enable_idempotence`` is off,
    as :func:`producer_kwargs`."""
    return {
        **librdkafka_connection(kafka),
        "acks": "all",
        "enable.idempotence": kafka.enable_idempotence,
        "compression.type": kafka.compression_type,  # none | gzip | snappy | lz4 | zstd, all built into the wheel
        "linger.ms": kafka.linger_ms,
        "batch.size": kafka.producer_batch_size,
        "message.max.bytes": kafka.max_request_size,
        "message.timeout.ms": kafka.delivery_timeout_ms,
        "request.timeout.ms": kafka.request_timeout_ms,
        # the Java client's (and kafka-python's) keyed partitioning; librdkafka's default is CRC32
        "partitioner": "murmur2_random",
    }
