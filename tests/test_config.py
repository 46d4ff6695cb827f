"""Config parsing: readable errors by key path, overrides, secrets."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selectd.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
MINIMAL = """
[kafka]
bootstrap_servers = ["127.0.0.1:9092"]
group_id = "g"
input_topics = ["in"]

[topics]
accepted = "a"
rejected = "r"
dlq = "d"
"""


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def _error(tmp_path, text: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), list(overrides))
    return str(info.value)


def test_minimal_config_and_defaults(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.kafka.input_topics == ["in"] and config.metrics.port == 9108 and config.stages == []
    assert len(config.digest) == 16


def test_bootstrap_servers_take_kafkas_comma_separated_form(tmp_path):
    """What one shared setting gives the daemon (--set), KEDA and kafka-topics.sh alike (deploy/k8s)."""
    config = load_config(_write(tmp_path, MINIMAL), ["kafka.bootstrap_servers=a:9092, b:9092,c:9093"])
    assert config.kafka.bootstrap_servers == ["a:9092", "b:9092", "c:9093"]
    assert "kafka.bootstrap_servers" in _error(tmp_path, MINIMAL, "kafka.bootstrap_servers= , ")


def test_unknown_key_is_named_by_path(tmp_path):
    assert "kafka.bootstrap_server: unknown key" in _error(tmp_path, MINIMAL.replace("bootstrap_servers", "bootstrap_server"))


def test_wrong_type_names_the_path(tmp_path):
    message = _error(tmp_path, MINIMAL + "[batch]\nmax_docs = \"many\"\n")
    assert message.startswith("batch.max_docs:") and "integer" in message


def test_missing_section(tmp_path):
    assert "topics: Field required" in _error(tmp_path, MINIMAL.split("[topics]")[0])


def test_stage_option_errors_carry_the_stage_index(tmp_path):
    text = MINIMAL + '[[stages]]\nname = "g"\ntype = "gopher_quality"\n[stages.options]\nbogus = 1\n'
    assert "stages[0].options.bogus: unknown key" in _error(tmp_path, text)


def test_unknown_scorer_type(tmp_path):
    text = MINIMAL + '[[stages]]\nname = "g"\ntype = "nope"\n'
    message = _error(tmp_path, text)
    assert message.startswith("stages[0].type:") and "unknown scorer type 'nope'" in message


def test_route_must_name_a_stage_signal(tmp_path):
    text = MINIMAL + '[[routes]]\nname = "hi"\ntopic = "t"\nwhen = [{signal = "quality.prob", min = 0.5}]\n'
    assert "route 'hi': signal 'quality.prob'" in _error(tmp_path, text)


def test_bad_rule_bounds(tmp_path):
    text = MINIMAL + ('[[stages]]\nname = "g"\ntype = "gopher_quality"\n'
                      'rules = [{signal = "n_words", min = 5, max = 1}]\n')
    assert "stages[0].rules[0]: min (5.0) is greater than max (1.0)" in _error(tmp_path, text)


def test_overrides_apply_before_validation(tmp_path):
    path = _write(tmp_path, MINIMAL)
    config = load_config(path, ["batch.max_docs=50", "kafka.input_topics=[\"x\", \"y\"]", "topics.dlq=dead"])
    assert config.batch.max_docs == 50 and config.kafka.input_topics == ["x", "y"] and config.topics.dlq == "dead"
    assert config.digest != load_config(path).digest
    with pytest.raises(ConfigError, match="batch.max_docs: Input should be greater than or equal to 1"):
        load_config(path, ["batch.max_docs=0"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, ["batch.max_docs"])


def test_secret_from_env_never_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("SELECTD_TEST_PASSWORD", "hunter2")
    text = MINIMAL.replace('input_topics = ["in"]', 'input_topics = ["in"]\nsecurity_protocol = "SASL_SSL"\n'
                           'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "u"\nsasl_password = { env = "SELECTD_TEST_PASSWORD" }')
    config = load_config(_write(tmp_path, text))
    assert config.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())
    from selectd.kafka.settings import connection_kwargs
    kwargs = connection_kwargs(config.kafka)
    assert kwargs["sasl_plain_password"] == "hunter2" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    monkeypatch.delenv("SELECTD_TEST_PASSWORD")
    assert "kafka.sasl_password: environment variable 'SELECTD_TEST_PASSWORD' is not set" in _error(tmp_path, text)


def test_sasl_requires_credentials(tmp_path):
    text = MINIMAL.replace('input_topics = ["in"]', 'input_topics = ["in"]\nsecurity_protocol = "SASL_PLAINTEXT"')
    assert "kafka: security_protocol SASL_PLAINTEXT needs sasl_mechanism, sasl_username, sasl_password" in _error(tmp_path, text)


def test_check_config_cli_explains_errors(tmp_path):
    bad = _write(tmp_path, MINIMAL.replace("group_id", "groupid"))
    result = subprocess.run([sys.executable, "-m", "selectd.cli", "check-config", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "kafka.groupid: unknown key" in result.stderr and "kafka.group_id: Field required" in result.stderr
    ok = subprocess.run([sys.executable, "-m", "selectd.cli", "check-config", str(REPO / "deploy" / "selectd.example.toml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
