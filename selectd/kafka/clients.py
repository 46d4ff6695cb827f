"""The Kafka client of ``[kafka] client``: kafka-python (the default, pure Python) or confluent-kafka
(librdkafka, the extra ``selectd[confluent]``). Both give a :class:`~selectd.kafka.base.Source` and a
:class:`~selectd.kafka.base.ProducerSink` under the same commit protocol; a client's module is
imported only when it is the one chosen, so an install without the extra never loads it.
"""
from __future__ import annotations

import importlib

from selectd.config import Config, ConfigError, KafkaSection
from selectd.kafka.base import ProducerSink, Source
from selectd.metrics import Metrics

#: the Python package each client needs, and how to install it
PACKAGES = {"kafka-python": ("kafka", "pip install selectd"),
            "confluent-kafka": ("confluent_kafka", "pip install 'selectd[confluent]'")}


def client_problems(kafka: KafkaSection) -> list[str]:
    """The chosen client's package cannot be imported: one line naming ``kafka.client`` and the install."""
    module, install = PACKAGES[kafka.client]
    try:
        importlib.import_module(module)
    except ImportError:
        return [f'kafka.client: "{kafka.client}" needs the {kafka.client} package, which is not installed ({install})']
    return []


def check_client(config: Config) -> None:
    """A :class:`ConfigError` naming ``kafka.client`` when the chosen client cannot be loaded."""
    problems = client_problems(config.kafka)
    if problems:
        raise ConfigError("\n".join(problems))


def open_sink(config: Config, metrics: Metrics) -> ProducerSink:
    """The chosen client's producer sink; a :class:`ConfigError` when its package is missing."""
    check_client(config)
    if config.kafka.client == "confluent-kafka":
        from selectd.kafka.confluent_sink import ConfluentSink

        return ConfluentSink(config, metrics)
    from selectd.kafka.sink import KafkaSink

    return KafkaSink(config, metrics)


def open_source(config: Config, metrics: Metrics) -> Source:
    """The chosen client's consumer, subscribed to ``kafka.input_topics``; a :class:`ConfigError` when
    its package is missing."""
    check_client(config)
    if config.kafka.client == "confluent-kafka":
        from selectd.kafka.confluent_source import ConfluentSource

        return ConfluentSource(config, metrics)
    from selectd.kafka.source import KafkaSource

    return KafkaSource(config, metrics)
