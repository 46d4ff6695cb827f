"""Connection settings shared by the consumer, the producer and the admin client."""
from __future__ import annotations

from typing import Any

from selectd.config import KafkaSection


def connection_kwargs(kafka: KafkaSection) -> dict[str, Any]:
    """kafka-python keyword arguments for brokers, client id and TLS / SASL."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "request_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (value := getattr(kafka, name)) is not None:
                kwargs[name] = str(value)
        if kafka.ssl_password is not None:
            kwargs["ssl_password"] = kafka.ssl_password.get_secret_value()
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return kwargs


def ensure_topics(kafka: KafkaSection, topics: dict[str, int]) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions); returns those created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**connection_kwargs(kafka))
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, partitions, 1) for name, partitions in topics.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()
