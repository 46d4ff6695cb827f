"""Parse, route, cascade, selection and the produce-failure policy without a broker."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import orjson
import pytest

from conftest import text_documents
from selectd.cascade import Cascade, Stage
from selectd.config import SelectionConfig, config_from_dict
from selectd.kafka.base import ProducerSink
from selectd.metrics import Metrics
from selectd.parse import parse_record
from selectd.records import RECORD_OVERHEAD_BYTES, Document, Invalid, Output, Record, dead_letter
from selectd.router import Router, earlier_tiers, splice_object
from selectd.thresholds import Rule
from selectd.scorers.base import Scorer, ScorerOptions
from selectd.selection import Selector, weighted_top_threshold
from selectd.sinks.base import DeliveryError


def _record(value: bytes | None) -> Record:
    return Record("in", 0, 5, b"k", value)


@pytest.mark.parametrize("value, reason", [
    (None, "tombstone"),
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b'"just a string"', "not_an_object"),
    (b'{"text": "x"}', "missing_id"),
    (b'{"id": null, "text": "x"}', "missing_id"),
    (b'{"id": 1, "text": "x"}', "id_not_string"),
    (b'{"id": "a"}', "missing_text"),
    (b'{"id": "a", "text": 3}', "text_not_string"),
    (b'{"id": "a", "text": " \\n "}', "empty_text"),
    (b'{"id": "a", "text": ""}', "empty_text"),
    (b'{"id": "a", "text": "\\u2003\\u3000"}', "empty_text"),  # Unicode spaces, as str.strip() sees them
    (b'{"id": "a", "text": "\xc3\x28"}', "invalid_utf8"),
    (b'{"id": "a", "text": "\\ud800"}', "invalid_unicode"),
    (b'{"id": "a", "text": "' + "é".encode() * 60 + b'"}', "text_too_large"),
    (b"x" * 1001, "message_too_large"),
])
def test_invalid_input_reasons(value, reason):
    result = parse_record(_record(value), max_message_bytes=1000, max_text_bytes=100)
    assert isinstance(result, Invalid) and result.reason == reason


def test_valid_document_keeps_all_fields():
    result = parse_record(_record(b'{"id": "a", "text": "hello\\u0000 world", "x": [1, {"y": 2}]}'), 1000, 100)
    assert isinstance(result, Document) and result.text == "hello\0 world" and result.fields["x"] == [1, {"y": 2}]


def test_dead_letters_keep_the_input_and_say_why():
    record = Record("in", 3, 7, b"k", b"{bad", 1234, [("trace", b"t1")])
    letter = dead_letter(record, "dlq", "invalid_json", "unexpected end", doc_id=None)
    assert (letter.topic, letter.key, letter.value, letter.outcome, letter.reason) == ("dlq", b"k", b"{bad", "dlq",
                                                                                     "invalid_json")
    assert letter.headers == [("trace", b"t1"), ("selectd.reason", b"invalid_json"), ("selectd.error", b"unexpected end"),
                              ("selectd.source.topic", b"in"), ("selectd.source.partition", b"3"),
                              ("selectd.source.offset", b"7"), ("selectd.source.timestamp_ms", b"1234")]
    failed = dead_letter(record, "dlq", "produce_failed", "MessageSizeTooLargeError()", intended_topic="out", doc_id="d")
    assert ("selectd.intended_topic", b"out") in failed.headers and failed.doc_id == "d"
    assert dead_letter(record, "dlq", "invalid_json", "x", max_bytes=10_000) == dead_letter(record, "dlq", "invalid_json", "x")


def test_a_dead_letter_over_the_producer_limit_is_cut_to_fit():
    record = Record("in", 0, 1, b"k" * 5000, b"v" * 100_000, None, [("huge", b"h" * 50_000)])
    limit = 20_000
    letter = dead_letter(record, "dlq", "produce_failed", "too large", intended_topic="out", max_bytes=limit)
    headers = dict(letter.headers)
    assert "huge" not in headers and headers["selectd.truncated_from_bytes"] == b"100000"
    assert headers["selectd.reason"] == b"produce_failed" and headers["selectd.intended_topic"] == b"out"
    assert len(letter.key) == 1024 and letter.value == record.value[:len(letter.value)]
    size = len(letter.key) + len(letter.value) + sum(len(k) + len(v) for k, v in letter.headers) + RECORD_OVERHEAD_BYTES
    assert size == limit


def test_every_dead_letter_carries_the_document_id_and_the_source_cut_or_not():
    config = config_from_dict({"kafka": {"bootstrap_servers": ["x:1"], "group_id": "g", "input_topics": ["in"]},
                               "topics": {"accepted": "a", "rejected": "r", "dlq": "d"}})
    router = Router(config, {})
    record = Record("in", 2, 9, b"k", b'{"id": "doc-7", "text": ""}')
    letter = router.dead_letter(parse_record(record, 1000, 100))
    headers = dict(letter.headers)
    assert headers["selectd.id"] == b"doc-7" and headers["selectd.reason"] == b"empty_text"
    assert (headers["selectd.source.topic"], headers["selectd.source.partition"], headers["selectd.source.offset"]) == \
        (b"in", b"2", b"9")
    huge = Record("in", 0, 1, b"k", orjson.dumps({"id": "doc-8", "text": "x" * 100_000}), None, [("h", b"h" * 50_000)])
    cut = dead_letter(huge, "d", "produce_failed", "too large", intended_topic="a", doc_id="doc-8", max_bytes=20_000)
    headers = dict(cut.headers)
    assert b"selectd.truncated_from_bytes".decode() in headers, "it was cut"
    assert headers["selectd.id"] == b"doc-8" and headers["selectd.source.offset"] == b"1"
    no_id = router.dead_letter(parse_record(Record("in", 0, 3, None, b"{nope"), 1000, 100))
    assert "selectd.id" not in dict(no_id.headers), "no id could be parsed"


def test_parse_takes_the_configured_id_and_text_fields():
    record = _record(b'{"doc_id": "x1", "content": "hello there", "text": 5}')
    document = parse_record(record, 1000, 100, id_key="doc_id", text_key="content")
    assert isinstance(document, Document) and (document.id, document.text) == ("x1", "hello there")
    invalid = parse_record(_record(b'{"doc_id": "x1", "body": "hi"}'), 1000, 100, id_key="doc_id", text_key="content")
    assert (invalid.reason, invalid.detail, invalid.doc_id) == ("missing_text", "no 'content' field", "x1")


def test_splice_preserves_original_bytes():
    original = b'{"id":"a", "text":"t",  "score": 1.50, "nested": {"k": [1,2]}}  \n'
    obj = orjson.loads(original)
    spliced = splice_object(original, obj, "selectd", {"decision": "accepted"})
    assert spliced.startswith(original.rstrip()[:-1])
    assert orjson.loads(spliced) == {**obj, "selectd": {"decision": "accepted"}}
    # a producer-supplied "selectd" field is replaced, not duplicated
    clash = b'{"id":"a","text":"t","selectd":1}'
    assert orjson.loads(splice_object(clash, orjson.loads(clash), "selectd", {"d": 2}))["selectd"] == {"d": 2}


def test_an_earlier_tiers_selectd_object_moves_to_previous():
    """Three tiers in a row: the producer's bytes stay, each tier's object is kept, oldest first."""
    original = b'{"id": "a",  "text": "t", "x": 1.50}'
    value = original
    objects = []
    for tier in range(3):
        fields = orjson.loads(value)
        decision = {"decision": "accepted", "tier": tier}
        if "selectd" in fields:
            decision["previous"] = earlier_tiers(fields["selectd"])
        value = splice_object(value, fields, "selectd", decision)
        assert value.startswith(original[:-1] + b',"selectd":'), "the producer's bytes, as written"
        objects.append({"decision": "accepted", "tier": tier})
    assert orjson.loads(value)["selectd"] == {**objects[2], "previous": objects[:2]}
    assert earlier_tiers(7) == [7], "a producer's own selectd value is kept too"


class LengthScorer(Scorer):
    kind = "test_length"

    def __init__(self, name="length", options=ScorerOptions()):
        super().__init__(name, options)
        self.seen: list[str] = []

    def preprocess(self, text: str) -> str:
        return text.strip()

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        self.seen.extend(texts)
        return {"chars": np.array([len(t) for t in texts], dtype=np.float64),
                "first": np.array([t[:1] for t in texts], dtype=object)}


def test_cascade_skips_rejected_documents_in_later_stages():
    first, second = LengthScorer("first"), LengthScorer("second")
    cascade = Cascade([Stage("first", first, [Rule(signal="chars", min=3, reason="too_short")]),
                       Stage("second", second, [Rule(signal="first", **{"in": ["a", "b"]})])])
    verdicts = cascade.run(text_documents(["  ab  ", "abc", "xyz", "bcd"]))
    assert first.seen == ["ab", "abc", "xyz", "bcd"], "the scorer's declared preprocessing is applied"
    assert second.seen == ["abc", "xyz", "bcd"], "rejected documents never reach later stages"
    assert [(v.stage, v.reason) for v in verdicts] == [("first", "too_short"), (None, None),
                                                        ("second", "first_not_in"), (None, None)]
    assert verdicts[1].scores == {"first": {"chars": 3.0, "first": "a"}, "second": {"chars": 3.0, "first": "a"}}
    assert "second" not in verdicts[0].scores


def test_rules_naming_unknown_signals_fail_at_load():
    from selectd.config import ConfigError

    cascade = Cascade([Stage("length", LengthScorer(), [Rule(signal="chars", min=1), Rule(signal="charz", min=1)],
                             path="stages[3]")])
    with pytest.raises(ConfigError) as error:
        cascade.warmup()
    assert str(error.value) == ("stages[3].rules[1].signal: 'charz', not a signal of stage 'length' (test_length), "
                                "which emits chars, first")


def test_router_bands_and_versions():
    config = config_from_dict({
        "kafka": {"bootstrap_servers": ["x:1"], "group_id": "g", "input_topics": ["in"]},
        "topics": {"accepted": "mid", "rejected": "rej", "dlq": "dlq", "attributes": "attrs"},
    })
    router = Router(config.model_copy(update={"routes": []}), {})
    from selectd.config import RouteConfig
    router.routes = [RouteConfig(name="high", topic="high", when=[Rule(signal="length.chars", min=10)])]
    cascade = Cascade([Stage("length", LengthScorer(), [])])
    docs = [parse_record(Record("in", 0, i, None, orjson.dumps({"id": str(i), "text": t})), 10**6, 10**6)
            for i, t in enumerate(["short", "a much longer text"])]
    verdicts = cascade.run(docs)
    outputs = [router.outputs_for(d, v) for d, v in zip(docs, verdicts)]
    assert [o[0].topic for o in outputs] == ["mid", "high"]
    assert orjson.loads(outputs[1][0].value)["selectd"]["route"] == "high"
    attributes = orjson.loads(outputs[1][1].value)
    assert outputs[1][1].topic == "attrs"
    assert attributes == {"id": "1", "source": "in", "attributes": {"selectd__length__chars": [[0, 18, 18.0]],
                                                                     "selectd__length__first": [[0, 18, "a"]]}}


def test_weighted_threshold_matches_batch_recipe():
    scores = np.array([0.9, 0.1, 0.5, 0.7])
    chars = np.array([10.0, 70.0, 10.0, 10.0])
    # top by characters: 0.9 (10) + 0.7 (10) = 20 % of 100 characters
    assert weighted_top_threshold(scores, chars, 0.2) == 0.7
    assert weighted_top_threshold(scores, np.ones(4), 0.5) == 0.7


def test_running_quantile_converges_to_keep_fraction():
    rng = np.random.default_rng(0)
    selector = Selector(SelectionConfig(signal="s", keep_fraction=0.1, warmup_docs=0))
    kept = sum(selector.keep(batch, np.ones(len(batch))).sum() for batch in rng.random((200, 100)))
    assert 0.08 < kept / 20000 < 0.12


def test_running_quantile_keeps_everything_until_warmup_docs_were_seen():
    rng = np.random.default_rng(0)
    scores = rng.random((30, 100))
    scores[0, 7] = np.nan
    warm = Selector(SelectionConfig(signal="s", keep_fraction=0.1, warmup_docs=250))
    cold = Selector(SelectionConfig(signal="s", keep_fraction=0.1, warmup_docs=0))
    masks = [warm.keep(batch, np.ones(100)) for batch in scores]
    cold_masks = [cold.keep(batch, np.ones(100)) for batch in scores]
    flat, cold_flat = np.concatenate(masks), np.concatenate(cold_masks)
    assert flat[:250].sum() == 249 and not flat[7], "the first 250 documents kept, except a NaN score"
    assert (flat[250:] == cold_flat[250:]).all(), "after the warm-up the same threshold as without one"
    assert 0.05 < flat[300:].mean() < 0.15


def test_window_top_keeps_floor_of_window_fraction():
    selector = Selector(SelectionConfig(signal="s", keep_fraction=1 / 7, method="window_top"))
    scores = np.arange(30, dtype=np.float64)
    mask = selector.keep(scores, np.ones(30))
    assert mask.sum() == 4 and set(np.flatnonzero(mask)) == {26, 27, 28, 29}


def test_rule_passes_value_equals_the_vectorised_check():
    numbers = [float("nan"), float("-inf"), -1.0, 0.0, 0.5, 0.9, 1.0, 2.0, float("inf")]
    rules = [Rule(signal="s", min=0.5), Rule(signal="s", max=0.9), Rule(signal="s", min=0.0, max=1.0),
             Rule(signal="s", min=0.9, max=0.9)]
    for rule in rules:
        assert [rule.passes_value(v) for v in numbers] == rule.passes(np.asarray(numbers)).tolist(), rule
    labels = ["en", "de", "fr", ""]
    categorical = Rule(signal="lang", **{"in": ["en", "de"]})
    assert [categorical.passes_value(v) for v in labels] == categorical.passes(np.asarray(labels, dtype=object)).tolist()


class _ScriptedProducerSink(ProducerSink):
    """A producer client that fails the sends the test names: ``errors[topic]`` is raised, its failure
    kind named by its type (a permanent ``invalid_topic`` or ``too_large``, else ``unavailable``), and
    records every attempt."""

    class Permanent(Exception):
        pass

    class TooLarge(Permanent):
        pass

    def __init__(self, config, metrics, errors: dict[str, Exception]):
        super().__init__(config, metrics)
        self.errors, self.attempts, self.discarded = errors, [], 0

    def _send_all(self, outputs):
        self.attempts.append([out.topic for out in outputs])
        return [(out, self.errors[out.topic]) for out in outputs if out.topic in self.errors]

    class Broken(Exception):
        pass

    def _failure_kind(self, error):
        if isinstance(error, self.TooLarge):
            return "too_large"
        if isinstance(error, self.Broken):
            return "producer_failed"
        return "invalid_topic" if isinstance(error, self.Permanent) else "unavailable"

    def _discard_producer(self):
        self.discarded += 1

    def close(self):
        pass


def _sink_config():
    return config_from_dict({"kafka": {"bootstrap_servers": ["x:1"], "group_id": "g", "input_topics": ["in"]},
                             "topics": {"accepted": "acc", "rejected": "rej", "dlq": "dlq"},
                             "delivery": {"produce_retries": 2, "retry_backoff_s": 0}})


def _outputs(*topics):
    return [Output(topic, b"k", b'{"id": "x"}', [], "accepted", None, Record("in", 0, i, b"k", b'{"id": "x"}'), "x")
            for i, topic in enumerate(topics)]


def test_producer_sink_dead_letters_permanent_failures_and_counts_what_arrived():
    metrics = Metrics()
    sink = _ScriptedProducerSink(_sink_config(), metrics, {"gone": _ScriptedProducerSink.Permanent("no topic")})
    sink.deliver(_outputs("acc", "gone", "acc"))
    assert sink.attempts == [["acc", "gone", "acc"], ["dlq"]], "a permanent failure is not retried"
    assert metrics.totals("selectd_documents_out_total", ("topic", "outcome")) == {"acc/accepted": 2, "dlq/dlq": 1}
    assert metrics.totals("selectd_dead_letters_total", ("reason",)) == {"produce_failed": 1}
    assert metrics.totals("selectd_produce_failures_total", ("topic", "error")) == {"gone/invalid_topic": 1}


def test_producer_sink_raises_one_delivery_error_and_counts_nothing_when_retries_run_out():
    metrics = Metrics()
    sink = _ScriptedProducerSink(_sink_config(), metrics, {"acc": ConnectionError("broker down")})
    with pytest.raises(DeliveryError, match="1 outputs undelivered after retries"):
        sink.deliver(_outputs("acc", "rej"))
    assert sink.attempts == [["acc", "rej"], ["acc"], ["acc"]] and sink.discarded == 1
    assert metrics.totals("selectd_documents_out_total", ("topic", "outcome")) == {}
    assert metrics.produce_retries._value.get() == 2


def test_producer_sink_fails_the_batch_at_once_when_the_producer_itself_failed():
    metrics = Metrics()
    sink = _ScriptedProducerSink(_sink_config(), metrics, {"acc": _ScriptedProducerSink.Broken("fenced")})
    with pytest.raises(DeliveryError, match="producer failed"):
        sink.deliver(_outputs("rej", "acc"))
    assert sink.attempts == [["rej", "acc"]] and sink.discarded == 1, "no retry through the failed producer"
    assert metrics.totals("selectd_produce_failures_total", ("topic", "error")) == {"acc/producer_failed": 1}
    assert metrics.totals("selectd_documents_out_total", ("topic", "outcome")) == {}
