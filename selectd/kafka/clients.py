"""The Kafka client of ``[kafka] client``: kafka-python (the default, pure Python) or confluent-kafka
(librdkafka, the extra ``selectd[confluent]``). Both give a :class:`~selectd.kafka.base.Source` and a
:class:`~selectd.kafka.base.ProducerSink` under the same commit protocol; a client's module is
imported only when it is the one chosen, so an install without the extra never loads it.
"""
from __future__ import annotations

import importlib

from selectd.config import Config, ConfigError, KafkaSection
from selectd.kafka.base import ProducerSink, Source
from selectd.kafka.settings import codec_problems
from selectd.metrics import Metrics

#: the Python package each client needs, and how to install it
PACKAGES = {"kafka-python": ("kafka", "pip install selectd"),
            "confluent-kafka": ("confluent_kafka", "pip install 'selectd[confluent]'")}


def client_problems(kafka: KafkaSection) -> list[str]:
    """What the chosen client lacks before it connects, one line per problem naming the key: its
    package, and (kafka-python) the codec of ``compression_type`` (librdkafka has every codec built in)."""
    module, install = PACKAGES[kafka.client]
    try:
        importlib.import_module(module)
    except ImportError:
        return [f'kafka.client: "{kafka.client}" needs the {kafka.client} package, which is not installed ({install})']
    return codec_problems(kafka) if kafka.client == "kafka-python" else []


def check_client(config: Config) -> None:
    """A :class:`ConfigError` naming the key when the chosen client cannot run (:func:`client_problems`)."""
    problems = client_problems(config.kafka)
    if problems:
        raise ConfigError("\n".join(problems))


def open_clients(config: Config, metrics: Metrics) -> tuple[ProducerSink, Source]:
    """The chosen client's producer sink and consumer (subscribed to ``kafka.input_topics``). Raises
    :class:`~selectd.kafka.base.BrokerError` when the brokers do not answer yet (the sink is closed
    then), :class:`ConfigError` when the client cannot run."""
    check_client(config)
    if config.kafka.client == "confluent-kafka":
        from selectd.kafka.confluent_sink import ConfluentSink as sink_type
        from selectd.kafka.confluent_source import ConfluentSource as source_type
    else:
        from selectd.kafka.sink import KafkaSink as sink_type
        from selectd.kafka.source import KafkaSource as source_type
    sink = sink_type(config, metrics)
    try:
        return sink, source_type(config, metrics)
    except BaseException:
        sink.close()
        raise
