"""The two Kafka clients from the config, without a broker: every [kafka] key reaches both, the limits
one client has and the other not are config errors naming the key (and are the clients' own), a
missing client package is a clear error at start and in check-config, librdkafka's repeated log
lines are throttled."""
from __future__ import annotations

import logging
import subprocess
import sys
import typing

import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer, KafkaProducer

from conftest import REPO
from selectd.config import CLIENT_MAXIMA, KafkaClient, KafkaSection, config_from_dict, kafka_problems
from selectd.kafka.settings import (RepeatFilter, consumer_kwargs, librdkafka_consumer, librdkafka_producer,
                                    producer_kwargs)

BASE = {"bootstrap_servers": ["127.0.0.1:1"], "group_id": "g", "input_topics": ["in"]}
TOPICS = {"accepted": "a", "rejected": "r", "dlq": "d"}


def _config(**kafka):
    return config_from_dict({"kafka": {**BASE, **kafka}, "topics": TOPICS})


def _kafka_python(config) -> dict:
    return {**consumer_kwargs(config), **producer_kwargs(config.kafka)}


def _librdkafka(config) -> dict:
    return {**librdkafka_consumer(config), **librdkafka_producer(config.kafka)}


#: a second value for every [kafka] key, valid with the SASL_SSL settings below
OTHER_VALUES = {
    "bootstrap_servers": ["127.0.0.1:2", "127.0.0.1:3"], "group_id": "other", "client_id": "other",
    "auto_offset_reset": "latest", "session_timeout_ms": 20_000, "heartbeat_interval_ms": 4_000,
    "max_poll_interval_ms": 200_000, "fetch_max_bytes": 2_000_000, "max_partition_fetch_bytes": 500_000,
    "request_timeout_ms": 20_000, "compression_type": "gzip", "linger_ms": 50, "max_request_size": 2_000_000,
    "producer_batch_size": 500_000, "delivery_timeout_ms": 90_000, "enable_idempotence": False,
    "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "other",
    "sasl_password": "other-secret", "ssl_cafile": "/other/ca.pem", "ssl_certfile": "/other/client.pem",
    "ssl_keyfile": "/other/client.key", "ssl_password": "other-key-secret", "ssl_check_hostname": False,
}
SECURE = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p",
          "ssl_cafile": "/ca.pem", "ssl_certfile": "/client.pem", "ssl_keyfile": "/client.key", "ssl_password": "k"}
#: keys that are not client settings: the subscription, and the choice of client itself
NOT_SETTINGS = {"input_topics", "client"}


def test_every_kafka_key_reaches_both_clients():
    assert set(OTHER_VALUES) | NOT_SETTINGS == set(KafkaSection.model_fields), "a new [kafka] key needs a value here"
    base = _config(**SECURE)
    for key, value in OTHER_VALUES.items():
        changed = _config(**{**SECURE, key: value})
        assert _kafka_python(changed) != _kafka_python(base), f"kafka.{key} does not reach kafka-python"
        assert _librdkafka(changed) != _librdkafka(base), f"kafka.{key} does not reach librdkafka"


def test_librdkafka_takes_the_settings_of_the_default_config():
    config = _config(client="confluent-kafka")
    Consumer(librdkafka_consumer(config)).close()
    Producer(librdkafka_producer(config.kafka)).flush(0)


def _consistent(kafka: dict) -> dict:
    """``kafka`` with the keys that depend on others moved along, so only the key under test is off."""
    kafka = {**kafka}
    defaults = KafkaSection(**BASE)
    get = lambda key: kafka.get(key, getattr(defaults, key))  # noqa: E731
    kafka["max_poll_interval_ms"] = max(get("max_poll_interval_ms"), get("session_timeout_ms"))
    kafka["delivery_timeout_ms"] = max(get("delivery_timeout_ms"), get("linger_ms") + get("request_timeout_ms") + 1)
    kafka["producer_batch_size"] = min(get("producer_batch_size"), get("max_request_size"))
    return kafka


def _starts(client: str, config) -> bool:
    """Whether ``client`` builds its consumer and producer from ``config`` (no broker is needed for that)."""
    try:
        if client == "confluent-kafka":
            Consumer(librdkafka_consumer(config)).close()
            Producer(librdkafka_producer(config.kafka)).flush(0)
        else:
            KafkaConsumer(**consumer_kwargs(config), api_version=(2, 8)).close()
            KafkaProducer(**producer_kwargs(config.kafka), api_version=(2, 8)).close(timeout=0)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("client, key, most", [(client, key, most) for client, maxima in CLIENT_MAXIMA.items()
                                               for key, most in maxima.items()])
def test_a_limit_of_one_client_is_a_config_error_naming_the_key_and_the_clients_own(client, key, most):
    at_limit = _consistent({"client": client, key: most})
    assert kafka_problems(KafkaSection(**BASE, **at_limit)) == []
    assert _starts(client, _config(**at_limit)), f"{client} refuses kafka.{key} = {most}"
    over = _consistent({"client": client, key: most + 1})
    problems = kafka_problems(KafkaSection(**BASE, **over))
    assert len(problems) == 1 and problems[0].startswith(f"kafka.{key}: {most + 1} is over {most}"), problems
    assert f'kafka.client = "{client}"' in problems[0]
    with pytest.raises(Exception, match=f"kafka.{key}"):
        _config(**over)
    other = next(c for c in typing.get_args(KafkaClient) if c != client)
    other_most = CLIENT_MAXIMA[other].get(key)
    other_takes = other_most is None or most + 1 <= other_most
    assert (kafka_problems(KafkaSection(**BASE, **{**over, "client": other})) == []) == other_takes
    built = KafkaSection.model_construct(**{**KafkaSection(**BASE).model_dump(), **over})
    assert not _starts(client, type("C", (), {"kafka": built, "batch": _config().batch})()), \
        f"{client} takes kafka.{key} = {most + 1}: the limit is not its own"


@pytest.mark.parametrize("client, kafka, key, other_takes", [
    ("kafka-python", {"request_timeout_ms": 30_000, "delivery_timeout_ms": 20_000}, "delivery_timeout_ms", True),
    # (kafka-python wants more: linger_ms + request_timeout_ms)
    ("confluent-kafka", {"linger_ms": 200_000, "delivery_timeout_ms": 150_000}, "delivery_timeout_ms", False),
    ("confluent-kafka", {"session_timeout_ms": 6000, "max_poll_interval_ms": 5000}, "max_poll_interval_ms", True),
])
def test_keys_a_client_wants_related_are_config_errors_naming_the_key(client, kafka, key, other_takes):
    problems = kafka_problems(KafkaSection(**BASE, client=client, **kafka))
    assert len(problems) == 1 and problems[0].startswith(f"kafka.{key}: ") and client in problems[0], problems
    built = KafkaSection.model_construct(**{**KafkaSection(**BASE).model_dump(), "client": client, **kafka})
    assert not _starts(client, type("C", (), {"kafka": built, "batch": _config().batch})()), "the client refuses it too"
    other = next(c for c in typing.get_args(KafkaClient) if c != client)
    assert (kafka_problems(KafkaSection(**BASE, client=other, **kafka)) == []) == other_takes


def test_producer_batches_fit_in_a_request():
    problems = kafka_problems(KafkaSection(**BASE, max_request_size=65_536))
    assert problems == ["kafka.producer_batch_size: 1000000 is over kafka.max_request_size (65536): "
                        "a batch goes out in one request"]
    assert kafka_problems(KafkaSection(**BASE, max_request_size=65_536, producer_batch_size=65_536)) == []


def test_a_missing_client_package_is_a_config_error_at_start_and_in_check_config(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nclient = "confluent-kafka"\nbootstrap_servers = ["127.0.0.1:1"]\ngroup_id = "g"\n'
                      'input_topics = ["in"]\n[topics]\naccepted = "a"\nrejected = "r"\ndlq = "d"\n'
                      '[metrics]\nenabled = false\n')
    hide = "import sys; sys.modules['confluent_kafka'] = None; from selectd.cli import main; sys.exit(main(sys.argv[1:]))"
    expected = "kafka.client: \"confluent-kafka\" needs the confluent-kafka package, which is not installed " \
               "(pip install 'selectd[confluent]')"
    for command in (["check-config", str(config)], ["run", "--config", str(config)]):
        result = subprocess.run([sys.executable, "-c", hide, *command], capture_output=True, text=True, cwd=REPO,
                                timeout=60)
        assert result.returncode != 0 and expected in result.stderr, (command, result.stderr)
    ok = subprocess.run([sys.executable, "-m", "selectd.cli", "check-config", str(config)], capture_output=True,
                        text=True, cwd=REPO, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_librdkafka_lines_repeating_are_let_through_once_per_interval():
    now = [0.0]
    throttle = RepeatFilter(interval_s=30, clock=lambda: now[0])

    def line(message: str, error: str = "") -> bool:
        record = logging.LogRecord("selectd.librdkafka", logging.WARNING, __file__, 1, message, None, None)
        record.error = error
        return throttle.filter(record)

    retry = "FAIL [selectd#consumer-2] [thrd:127.0.0.1:{}/bootstrap]: Connect failed (after {}ms in state CONNECT)"
    assert line(retry.format(9092, 0))
    now[0] = 0.1
    assert not line(retry.format(9092, 3)), "the same line, other timings: dropped"
    assert line("kafka client error", "1/1 brokers are down"), "another line passes"
    assert not line("kafka client error", "2/2 brokers are down")
    now[0] = 31
    assert line(retry.format(9092, 7)), "once per interval"
