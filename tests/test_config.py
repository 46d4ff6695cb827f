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


def _cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selectd.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_check_config_cli_explains_errors_and_exits_2_as_run_does(tmp_path):
    bad = _write(tmp_path, MINIMAL.replace("group_id", "groupid"))
    for argv in (["check-config", str(bad)], ["check-config", "-c", str(bad)], ["check-config", "--config", str(bad)],
                 ["run", "-c", str(bad)], ["score", "-c", str(bad), "in.jsonl", "-o", "out.jsonl"]):
        result = _cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "kafka.groupid: unknown key" in result.stderr and "kafka.group_id: Field required" in result.stderr


def test_set_takes_the_key_paths_errors_print(tmp_path):
    text = MINIMAL + '[[stages]]\nname = "g"\ntype = "gopher_quality"\n[[stages]]\nname = "f"\ntype = "fineweb_quality"\n'
    path = _write(tmp_path, text)
    for form in ("stages[1].enabled=false", "stages.1.enabled=false"):
        assert [s.enabled for s in load_config(path, [form]).stages] == [True, False], form
    # an error names the path in the one form --set takes, and that form sets the key
    message = _error(tmp_path, text, "stages[0].options.min_doc_words=many")
    assert message.startswith("stages[0].options.min_doc_words:"), message
    assert load_config(path, ["stages[0].options.min_doc_words=10"]).stages[0].options == {"min_doc_words": 10}
    rules = ["stages[0].rules=[{signal = \"n_words\", min = 3}]", "stages[0].rules[0].max=9"]
    assert load_config(path, rules).stages[0].rules[0].max == 9
    assert "stages[0].rules is not set; set the whole list" in _error(tmp_path, text, "stages[0].rules[0].max=9")
    assert "stages has 2 entries" in _error(tmp_path, text, "stages[2].enabled=false")
    assert "stages is a list" in _error(tmp_path, text, "stages.name=x")
    assert "not a key path" in _error(tmp_path, text, "stages[x].enabled=false")


def test_brokers_and_topics_take_comma_separated_strings(tmp_path):
    path = _write(tmp_path, MINIMAL)
    config = load_config(path, ["kafka.bootstrap_servers=kafka:9092", "kafka.input_topics=crawl-a, crawl-b"])
    assert config.kafka.bootstrap_servers == ["kafka:9092"] and config.kafka.input_topics == ["crawl-a", "crawl-b"]
    config = load_config(_write(tmp_path, MINIMAL.replace('input_topics = ["in"]', 'input_topics = "a,b"')))
    assert config.kafka.input_topics == ["a", "b"]
    assert "kafka.input_topics[1]: String should match pattern" in _error(tmp_path, MINIMAL, "kafka.input_topics=ok,bad topic!")


STAGES = """
[[stages]]
name = "lid"
type = "fasttext"
options = { model_dir = "models/lid176", languages = ["en"] }

[[stages]]
name = "fineweb"
type = "fineweb_quality"
"""


def _check(tmp_path, text: str, *overrides: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return _cli("check-config", "-c", str(_write(tmp_path, text)), *overrides, cwd=cwd)


def test_check_config_catches_what_run_would_hit(tmp_path, demo_models):
    """Each of these passed check-config and failed (or misrouted) only once `run` started."""
    ok = _check(tmp_path, MINIMAL + STAGES, cwd=demo_models)
    assert ok.returncode == 0, ok.stderr
    cases = {
        "a rule on a signal the stage does not emit": (
            ["--set", "stages[1].rules=[{signal = \"nonexistent\", min = 1}]"],
            "stages[1].rules[0].signal: 'nonexistent', not a signal of stage 'fineweb'"),
        "a model directory that is not there": (
            ["--set", "stages[0].options.model_dir=models/nowhere"],
            "stages[0].options.model_dir: models/nowhere/manifest.json: not found"),
        "a route on a misspelt signal": (
            ["--set", "routes=[{name = \"hq\", topic = \"t\", when = [{signal = \"fineweb.typo_signal\", min = 0}]}]"],
            "routes[0].when[0].signal: 'fineweb.typo_signal': stage 'fineweb' does not emit 'typo_signal'"),
    }
    for name, (overrides, expected) in cases.items():
        result = _check(tmp_path, MINIMAL + STAGES, *overrides, cwd=demo_models)
        assert result.returncode == 2 and expected in result.stderr, (name, result.stderr)
        # run stops at the same place, before it connects (no broker listens on the config's port)
        run = _cli("run", "-c", str(tmp_path / "c.toml"), *overrides, cwd=demo_models)
        assert run.returncode == 2 and expected in run.stderr, (name, run.stderr)


def test_check_config_checks_the_producers_codec(tmp_path, monkeypatch):
    from kafka import codec

    from selectd.app import check

    config = load_config(_write(tmp_path, MINIMAL), ["kafka.compression_type=zstd"])
    assert check(config) == []
    monkeypatch.setattr(codec, "has_zstd", lambda: False)
    with pytest.raises(ConfigError, match=r"kafka.compression_type: 'zstd' needs the zstandard package"):
        check(config)


def test_check_config_warns_when_inputs_can_exceed_what_the_producer_sends(tmp_path):
    result = _check(tmp_path, MINIMAL + "[input]\nmax_message_bytes = 16000000\n")
    assert result.returncode == 0
    assert "warning: input.max_message_bytes (16000000) exceeds what the producer can send" in result.stderr
    assert "warning" not in _check(tmp_path, MINIMAL).stderr, "the defaults agree with each other"


def test_the_example_config_checks_with_its_models_and_its_sizes_agree(demo_models):
    result = _cli("check-config", str(REPO / "deploy" / "selectd.example.toml"), cwd=demo_models)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    missing = _cli("check-config", str(REPO / "deploy" / "selectd.example.toml"), cwd=REPO / "tests")
    assert missing.returncode == 2 and "stages[0].options.model_dir: models/lid176/manifest.json: not found" in missing.stderr


def test_list_scorers_shows_each_scorers_signals_and_options_with_defaults():
    result = _cli("check-config", "--list-scorers")
    assert result.returncode == 0
    out = result.stdout
    assert "fineweb_quality\n  signals: char_dup_ratio," in out
    assert "    line_punct_thr: float = 0.12" in out
    assert "    model_dir: str (required)  -- directory written by `selectd export fasttext`" in out
    assert "    provider: 'cpu' | 'cuda' = 'cpu'" in out
    assert "profile lid: language, language_prob" in out
