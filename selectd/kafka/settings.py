"""kafka-python settings from the ``[kafka]`` (and ``[batch]``) config: keyword arguments for the
admin client, the consumer and the producer, in one place; the codecs they need; opening a client."""
from __future__ import annotations

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
        "enable_idempotence": True,
        "compression_type": None if kafka.compression_type == "none" else kafka.compression_type,
        "linger_ms": kafka.linger_ms,
        "batch_size": kafka.producer_batch_size,
        "max_request_size": kafka.max_request_size,
        "delivery_timeout_ms": kafka.delivery_timeout_ms,
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
