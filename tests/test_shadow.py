"""Shadow stages, score histograms, drift and ``selectd compare`` (issue 21)."""
from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from conftest import Topics, assert_kinds_declared, collect, create_topics, produce, text_documents, write_config
from selectd.app import new_metrics, score_file
from selectd.cascade import Cascade, Stage
from selectd.cli import main as cli_main
from selectd.config import ConfigError, config_from_dict, load_config
from selectd.distributions import BUCKET_DOCS, DriftSettings, SignalDistributions, psi
from selectd.kafka.admin import ensure_topics
from selectd.parse import parse_record
from selectd.pipeline import Pipeline
from selectd.records import Record
from selectd.router import Router
from selectd.scorers.base import Scorer, ScorerOptions
from selectd.scorers.heuristics import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from selectd.signal_kinds import BUCKETS, SignalKind
from selectd.thresholds import Rule

BASE = {"kafka": {"bootstrap_servers": ["x:1"], "group_id": "g", "input_topics": ["in"]},
        "topics": {"accepted": "acc", "rejected": "rej", "dlq": "dlq"}}


class LengthScorer(Scorer):
    kind = "test_shadow_length"

    def __init__(self, name="length", options=ScorerOptions()):
        super().__init__(name, options)
        self.seen: list[str] = []

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        self.seen.extend(texts)
        return {"chars": np.array([len(t) for t in texts], dtype=np.float64)}

    def signal_kinds(self) -> dict[str, SignalKind]:
        return {"chars": SignalKind.COUNT}


def _cascade(shadow: bool) -> tuple[Cascade, LengthScorer]:
    last = LengthScorer("last")
    stages = [Stage("first", LengthScorer("first"), [Rule(signal="chars", min=3, reason="short")]),
              Stage("strict", LengthScorer("strict"), [Rule(signal="chars", min=6, reason="strict_short")], shadow=True),
              Stage("last", last, [Rule(signal="chars", max=8, reason="long")])]
    return Cascade(stages if shadow else [stages[0], stages[2]]), last


TEXTS = ["ab", "abcd", "abcdefg", "abcdefghijk", "abcde"]


def test_a_shadow_stage_records_its_decision_and_changes_nothing():
    with_shadow, last = _cascade(shadow=True)
    without, _ = _cascade(shadow=False)
    verdicts = with_shadow.run(text_documents(TEXTS))
    assert [(v.stage, v.reason, v.scores) for v in verdicts] == [(v.stage, v.reason, v.scores) for v in without.run(text_documents(TEXTS))]
    assert last.seen == ["abcd", "abcdefg", "abcdefghijk", "abcde"], "documents the shadow would reject go on"
    assert [{s: (v.reason, v.scores) for s, v in verdict.shadow.items()} for verdict in verdicts] == [
        {}, {"strict": ("strict_short", {"chars": 4.0})}, {"strict": (None, {"chars": 7.0})},
        {"strict": (None, {"chars": 11.0})}, {"strict": ("strict_short", {"chars": 5.0})}]
    assert all("strict" not in verdict.scores for verdict in verdicts), "routes never see a shadow stage's signals"


def test_outputs_and_attribute_records_carry_the_shadow_decision():
    config = config_from_dict({**BASE, "topics": {**BASE["topics"], "attributes": "attrs"}})
    cascade, _ = _cascade(shadow=True)
    docs = [parse_record(Record("in", 0, i, None, orjson.dumps({"id": str(i), "text": t})), 10**6, 10**6)
            for i, t in enumerate(TEXTS)]
    router = Router(config, {})
    outputs = [router.outputs_for(doc, verdict) for doc, verdict in zip(docs, cascade.run(docs))]
    body = orjson.loads(outputs[1][0].value)["selectd"]
    assert body["decision"] == "accepted" and body["shadow"] == {
        "strict": {"decision": "rejected", "reason": "strict_short", "scores": {"chars": 4.0}}}
    assert orjson.loads(outputs[2][0].value)["selectd"]["shadow"] == {"strict": {"decision": "accepted",
                                                                               "scores": {"chars": 7.0}}}
    assert "shadow" not in orjson.loads(outputs[0][0].value)["selectd"], "rejected before the shadow stage"
    attributes = orjson.loads(outputs[1][1].value)["attributes"]
    assert attributes["selectd__strict__chars"] == [[0, 4, 4.0]]
    assert attributes["selectd__strict__shadow_decision"] == [[0, 4, "rejected"]]
    assert attributes["selectd__strict__shadow_reason"] == [[0, 4, "strict_short"]]


def test_routes_may_not_read_a_shadow_stage():
    stages = [{"name": "gopher", "type": "gopher_quality", "shadow": True}]
    routes = [{"name": "hq", "topic": "hq", "when": [{"signal": "gopher.stop_words", "min": 3}]}]
    with pytest.raises(ConfigError, match=r"route 'hq': signal 'gopher.stop_words'.*enabled, live stage"):
        config_from_dict({**BASE, "stages": stages, "routes": routes})
    config_from_dict({**BASE, "stages": [{**stages[0], "shadow": False}], "routes": routes})


@pytest.mark.parametrize("kind", ["exact_dedup", "minhash_dedup"])
def test_a_dedup_stage_cannot_be_a_shadow_stage(kind, tmp_path):
    """Its scoring claims keys in the shared store: a trial run would change what live stages decide."""
    stage = {"name": "dedup", "type": kind, "shadow": True}
    dedup = {"store": "local", "path": str(tmp_path / "store")}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.shadow: a .*_dedup stage cannot be a shadow stage"):
        config_from_dict({**BASE, "stages": [stage], "dedup": dedup})
    config_from_dict({**BASE, "stages": [{**stage, "shadow": False}], "dedup": dedup})


@pytest.mark.parametrize("scorer_type", [GopherQuality, GopherRepetition, C4Quality, FineWebQuality])
def test_rule_scorers_declare_the_kind_of_every_signal(scorer_type):
    scorer = scorer_type("s", scorer_type.Options())
    signals = scorer.run(["A line of text.\n\nAnother paragraph, with a few more words in it..."])
    assert_kinds_declared(scorer, signals)
    assert set(signals) == set(scorer.signal_kinds())


def _families(registry) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(generate_latest(registry).decode())}


def test_histograms_count_what_numpy_counts_and_drift_is_psi_of_the_first_n_against_the_window():
    from prometheus_client import CollectorRegistry

    rng = np.random.default_rng(0)
    probabilities = rng.random(1500)
    probabilities[::97] = np.nan
    counts = rng.integers(0, 3000, 1500).astype(np.float64)
    distributions = SignalDistributions()
    distributions.enable_drift(DriftSettings(reference_docs=600, window_docs=400, bound=0.3))
    distributions.declare("s", {"p": SignalKind.PROBABILITY, "n": SignalKind.COUNT, "label": SignalKind.CATEGORY})
    start = 0
    assert BUCKET_DOCS == 256
    for size in [1, 7, 300, 92, 500, 3, 597]:  # batches below and above BUCKET_DOCS
        distributions.observe("s", {"p": probabilities[start:start + size], "n": counts[start:start + size],
                                    "label": np.array(["x"] * size, dtype=object)})
        start += size
    assert start == 1500
    registry = CollectorRegistry()
    registry.register(distributions)
    samples = _families(registry)
    for signal, values, kind in (("p", probabilities, SignalKind.PROBABILITY), ("n", counts, SignalKind.COUNT)):
        finite = values[~np.isnan(values)]
        edges = BUCKETS[kind]
        expected = [int((finite <= le).sum()) for le in edges] + [len(finite)]
        got = [s.value for s in samples["selectd_signal_value"] if s.name == "selectd_signal_value_bucket"
               and s.labels["signal"] == signal]
        assert got == expected, signal
        total = next(s.value for s in samples["selectd_signal_value"]
                     if s.name == "selectd_signal_value_sum" and s.labels["signal"] == signal)
        assert total == pytest.approx(finite.sum())

        def bins(part: np.ndarray) -> np.ndarray:
            ok = part[~np.isnan(part)]
            return np.array([*np.bincount(np.searchsorted(edges, ok), minlength=len(edges) + 1),
                             int(np.isnan(part).sum())])

        # Batches are bucketed once BUCKET_DOCS wait: as chunks of 308 (1 + 7 + 300), 592 (92 + 500) and
        # 600 (3 + 597) documents. The reference is the first 600 documents, the window the newest chunks
        # holding at least 400: the last 600.
        drift = next(s.value for s in samples["selectd_signal_drift"] if s.labels["signal"] == signal)
        assert drift == pytest.approx(float(psi(bins(values[:600]), bins(values[-600:]))))
    assert {s.labels["signal"] for s in samples["selectd_signal_value"]} == {"p", "n"}, "no histogram of a category"
    assert [s.value for s in samples["selectd_signal_drift_bound"]] == [0.3, 0.3]
    profile = distributions.profile("digest")
    assert profile["stages"]["s"]["p"]["nan"] == int(np.isnan(probabilities).sum())
    assert profile["stages"]["s"]["n"]["documents"] == 1500


def _pipeline(stages: list[dict], drift: dict) -> tuple[Pipeline, object]:
    config = config_from_dict({**BASE, "stages": stages, "drift": drift})
    metrics = new_metrics(config)
    return Pipeline.from_config(config, metrics), metrics


def _corpus(path: Path) -> tuple[list[bytes], list[bytes]]:
    """(real English documents, documents in other languages) of the sample corpus."""
    english, other = [], []
    for line in path.read_bytes().splitlines():
        doc = orjson.loads(line)
        if doc["lang"] != "en":
            other.append(line)
        elif doc["kind"] == "real":
            english.append(line)
    return english, other


def _stream(pipeline: Pipeline, metrics, lines: list[bytes], batch: int = 100) -> list[float]:
    """Feed ``lines`` in batches; after each, the highest exported drift gauge of the stage's signals."""
    highest = []
    for start in range(0, len(lines), batch):
        pipeline.process([Record("in", 0, start + i, None, v) for i, v in enumerate(lines[start:start + batch])])
        gauges = [s.value for s in _families(metrics.registry)["selectd_signal_drift"]]
        highest.append(max(gauges, default=float("nan")))
    return highest


DRIFT_STAGES = [{"name": "gopher", "type": "gopher_quality"}]


def test_drift_rises_when_the_stream_turns_multilingual_and_stays_low_when_it_does_not(sample_corpus):
    english, other = _corpus(sample_corpus)
    assert len(english) >= 1200 and len(other) >= 500
    drift = {"reference_docs": 600, "window_docs": 300, "bound": 0.25}
    stationary = _stream(*_pipeline(DRIFT_STAGES, drift), english[:1200])
    shifting = _stream(*_pipeline(DRIFT_STAGES, drift), english[:900] + other[:500])
    print(f"highest drift per batch, stationary: {[round(x, 3) for x in stationary]}")
    print(f"highest drift per batch, English then multilingual from document 900: {[round(x, 3) for x in shifting]}")
    # reference: documents 1-600; the first full window: 601-900
    assert all(np.isnan(x) for x in stationary[:8]), "no gauge before the reference and window are full"
    assert max(stationary[8:]) < 0.2
    assert shifting[8] < 0.2, "the window still holds English documentation only"
    assert min(shifting[-2:]) > 1.0, "the window is multilingual"


def test_a_profile_written_by_score_is_the_drift_reference(sample_corpus, tmp_path):
    english, other = _corpus(sample_corpus)
    sample = tmp_path / "sample.jsonl"
    sample.write_bytes(b"\n".join(english[:800]) + b"\n")
    profile = tmp_path / "profile.json"
    config = config_from_dict({**BASE, "stages": DRIFT_STAGES})
    score_file(config, sample, tmp_path / "out.jsonl", profile_path=profile)
    written = json.loads(profile.read_text())
    assert written["stages"]["gopher"]["stop_words"]["documents"] == 800
    drift = {"reference": str(profile), "window_docs": 300, "bound": 0.25}
    # the reference is there from the start: the gauge appears as soon as the window is full
    same = _stream(*_pipeline(DRIFT_STAGES, drift), english[800:1100])
    changed = _stream(*_pipeline(DRIFT_STAGES, drift), other[:300])
    assert np.isnan(same[1]) and same[2] < 0.2
    assert np.isnan(changed[1]) and changed[2] > 1.0
    with pytest.raises(ConfigError, match="drift.reference: .*missing.json"):
        new_metrics(config_from_dict({**BASE, "drift": {"reference": str(tmp_path / "missing.json")}}))


SCORE_STAGES = """
[[stages]]
name = "gopher"
type = "gopher_quality"

[[stages]]
name = "fineweb"
type = "fineweb_quality"
"""


def test_compare_lists_what_changes_side(sample_corpus, tmp_path, capsys):
    """Two configs differing in one threshold: the table agrees with two `selectd score` runs."""
    live = tmp_path / "live.toml"
    live.write_text(_toml(BASE) + SCORE_STAGES)
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(_toml(BASE) + SCORE_STAGES.replace('type = "fineweb_quality"',
                                                            'type = "fineweb_quality"\noptions = { line_punct_thr = 0.3 }'))
    assert cli_main(["compare", "--config", str(live), "--candidate", str(candidate), str(sample_corpus),
                     "-o", str(tmp_path / "compare.json"), "--show", "3"]) == 0
    text = capsys.readouterr().out
    result = json.loads((tmp_path / "compare.json").read_text())
    decisions = []
    for config in (live, candidate):
        out = tmp_path / f"{config.stem}.out.jsonl"
        score_file(load_config(config), sample_corpus, out)
        decisions.append([orjson.loads(line)["selectd"] for line in out.read_bytes().splitlines()])
    kept = [sum(d["decision"] == "accepted" for d in side) for side in decisions]
    assert (result["live"]["accepted"], result["candidate"]["accepted"]) == tuple(kept)
    changed = [i + 1 for i, (a, b) in enumerate(zip(*decisions)) if a["decision"] != b["decision"]]
    assert [c["line"] for c in result["changed"]] == changed and changed
    assert result["accepted_to_rejected"] + result["rejected_to_accepted"] == len(changed)
    fineweb = [collections.Counter(d["reason"] for d in side if d.get("stage") == "fineweb") for side in decisions]
    assert result["candidate"]["rejected_by_stage"]["fineweb"] == dict(fineweb[1])
    assert f"change side: {len(changed)} documents" in text and "documents that change side (first 3)" in text
    assert cli_main(["compare", "--config", str(live), "--candidate", str(candidate), str(sample_corpus), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result


def _toml(data: dict) -> str:
    from selectd.demo.configs import to_toml

    return to_toml(data)


def test_histogram_updates_cost_under_5_us_per_document_and_signal(sample_corpus, capsys):
    """The benchmark `selectd bench signals` prints; its figure must stay under 5 µs at every batch size."""
    from selectd.tools import signal_bench

    parser = argparse.ArgumentParser()
    signal_bench.add_bench_arguments(parser)
    assert signal_bench.bench(parser.parse_args(["--texts", str(sample_corpus), "--limit", "1000", "--json"])) == 0
    report = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        for row in report["batches"]:
            print(f"\nbatch {row['batch_size']:>5}: ours {row['ours_us_per_doc_signal']:.3f} µs/doc/signal, "
                  f"prometheus_client {row['prometheus_client_us_per_doc_signal']:.3f} ({row['ratio']:.1f}x)", end="")
    assert report["signals"] == 28 and [r["batch_size"] for r in report["batches"]] == [1, 10, 100, 1000]
    assert all(row["ours_us_per_doc_signal"] <= 5.0 for row in report["batches"]), report["batches"]
    assert report["batches"][-1]["ratio"] > 5, "bucketing a batch at once beats observing value by value"


# --- on the test broker ---------------------------------------------------------------------------

#: SCORE_STAGES with a stricter repetition filter between them, in shadow
SHADOW_STAGES = """
[[stages]]
name = "gopher"
type = "gopher_quality"

[[stages]]
name = "strict_repetition"
type = "gopher_repetition"
shadow = true
options = { dup_line_frac = 0.1, dup_para_frac = 0.1 }

[[stages]]
name = "fineweb"
type = "fineweb_quality"
"""


@pytest.mark.kafka
def test_a_shadow_stage_changes_no_routing_and_counts_what_score_counts(broker, daemons, sample_corpus, tmp_path):
    lines = sample_corpus.read_bytes().splitlines()[:600]
    messages = [(orjson.loads(line)["id"].encode(), line) for line in lines]
    runs = {}
    for name, stages in (("live", SCORE_STAGES), ("shadow", SHADOW_STAGES)):
        topics = Topics(partitions=2)
        create_topics(broker, topics)
        hq = f"{topics.tag}-hq"
        ensure_topics(broker.bootstrap, {hq: 1})
        route = f'[[routes]]\nname = "hq"\ntopic = "{hq}"\nwhen = [{{ signal = "fineweb.line_punct_ratio", min = 0.9 }}]\n'
        config = write_config(tmp_path / f"{name}.toml", broker, topics, stages, route)
        produce(broker, topics.input, messages)
        runs[name] = (topics, hq, config, daemons(config, tmp_path / f"{name}.log"))
    outputs = {}
    for name, (topics, hq, config, daemon) in runs.items():
        out = collect(broker, [topics.accepted, hq, topics.rejected, topics.dlq], len(messages))
        # topic names differ by their run's tag only
        outputs[name] = {m.key: (m.topic.replace(topics.tag, "T"),
                                 orjson.loads(m.value.replace(topics.tag.encode(), b"T"))["selectd"]) for m in out}
        assert len(out) == len(messages) == len(outputs[name])
    daemon = runs["shadow"][3]
    scraped = _shadow_counts(daemon.metrics_url())
    for daemon in (run[3] for run in runs.values()):
        assert daemon.terminate() == 0

    shadowed = 0
    for key, (topic, live) in outputs["live"].items():
        shadow_topic, shadow = outputs["shadow"][key]
        assert shadow_topic == topic, key
        assert {k: v for k, v in shadow.items() if k not in ("shadow", "versions")} == \
               {k: v for k, v in live.items() if k != "versions"}, key
        shadowed += "shadow" in shadow
    assert {topic for topic, _ in outputs["live"].values()} == {"T-accepted", "T-hq", "T-rejected"}
    assert shadowed == sum(scraped.values()) > 0

    # offline: `selectd score` of the same documents with the same config
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(b"\n".join(lines) + b"\n")
    summary = score_file(load_config(runs["shadow"][2]), input_path, tmp_path / "out.jsonl")
    from_file = collections.Counter()
    for line in (tmp_path / "out.jsonl").read_bytes().splitlines():
        body = orjson.loads(line)["selectd"]
        if "shadow" in body:
            from_file[(body["shadow"]["strict_repetition"]["decision"], body["decision"])] += 1
            assert outputs["shadow"][orjson.loads(line)["id"].encode()][1]["shadow"] == body["shadow"]
    offline = {(key.split("/")[1], key.split("/")[2]): value for key, value in summary.shadow.items() if value}
    assert scraped == offline == from_file
    assert scraped[("rejected", "accepted")] > 0, "the stricter shadow would reject documents the live cascade keeps"


def _shadow_counts(url: str) -> dict[tuple[str, str], float]:
    from selectd.status import scrape

    deadline = time.monotonic() + 10
    while True:  # counters are final once the last batch was processed, a moment before it is delivered
        counts = {(s.labels["shadow"], s.labels["live"]): s.value for s in scrape(url)
                  if s.name == "selectd_shadow_decisions_total" and s.value}
        documents = sum(s.value for s in scrape(url) if s.name == "selectd_documents_out_total")
        if documents >= 600 or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)
