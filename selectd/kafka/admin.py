"""Topic helpers for the demo, the load tests and the tests: create topics, fill one with messages.

``connection`` is the ``[kafka]`` section of a config (TLS / SASL included) or, for a local
plaintext broker, just its ``host:port``.
"""
from __future__ import annotations

from typing import Any, Iterable

from selectd.config import KafkaSection
from selectd.kafka.settings import connection_kwargs


def _kwargs(connection: KafkaSection | str) -> dict[str, Any]:
    if isinstance(connection, str):
        return {"bootstrap_servers": connection}
    return connection_kwargs(connection)


def ensure_topics(connection: KafkaSection | str, topics: dict[str, int]) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions); returns those created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**_kwargs(connection))
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


def produce(connection: KafkaSection | str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]],
            max_request_size: int = 16 << 20) -> int:
    """Send every ``(key, value)`` to ``topic`` in big batches and wait until all are acknowledged
    (raises the first failure); returns how many were sent."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**_kwargs(connection), linger_ms=20, batch_size=1 << 20, max_request_size=max_request_size)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
        return len(futures)
    finally:
        producer.close()
