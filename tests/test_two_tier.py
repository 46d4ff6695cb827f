"""Two daemons chained over the test broker, as the two-tier topology runs them (issue 20): tier 1's
accepted topic is tier 2's input, both write rejections and dead letters to the same topics."""
from __future__ import annotations

from collections import Counter

import orjson
import pytest

from conftest import Topics, collect, create_topics, produce, write_config

pytestmark = pytest.mark.kafka

TIER_1 = """
[[stages]]
name = "gopher"
type = "gopher_quality"
"""

TIER_2 = """
[[stages]]
name = "fineweb"
type = "fineweb_quality"
"""


def test_a_document_passing_both_tiers_keeps_both_tiers_scores(broker, daemons, sample_corpus, tmp_path):
    first, second = Topics(partitions=2), Topics(partitions=1)
    create_topics(broker, first)
    create_topics(broker, second)
    shared = f'[topics]\nrejected = "{first.rejected}"\ndlq = "{first.dlq}"\n'
    tier_1 = write_config(tmp_path / "tier1.toml", broker, first, TIER_1)
    tier_2 = write_config(tmp_path / "tier2.toml", broker, second, TIER_2,
                          f'[kafka]\ninput_topics = ["{first.accepted}"]\n' + shared)
    lines = sample_corpus.read_bytes().splitlines()[:400]
    messages = [(orjson.loads(line)["id"].encode(), line) for line in lines] + [(b"bad", b"{not json")]
    produce(broker, first.input, messages)
    chain = [daemons(tier_1, tmp_path / "tier1.log"), daemons(tier_2, tmp_path / "tier2.log")]

    final = collect(broker, [second.accepted, first.rejected, first.dlq], len(messages))
    between = {m.key: m for m in collect(broker, [first.accepted], 1, timeout_s=10)}
    assert all(daemon.terminate() == 0 for daemon in chain)

    keys = Counter(m.key for m in final)
    assert set(keys) == {key for key, _ in messages} and max(keys.values()) == 1, "every document once at the end"
    originals = dict(messages)
    by_stage = Counter()
    for message in final:
        if message.topic == first.dlq:
            assert message.key == b"bad" and message.value == originals[b"bad"]
            continue
        body = orjson.loads(message.value)
        selectd = body["selectd"]
        # the producer's fields, byte for byte, through both tiers
        assert message.value.startswith(originals[message.key].rstrip()[:-1] + b',"selectd":')
        by_stage[selectd.get("stage", "accepted")] += 1
        if selectd.get("stage") == "gopher":  # rejected by tier 1: one tier's object
            assert "previous" not in selectd and "fineweb" not in selectd["scores"]
            continue
        tier_1_output = between[message.key]
        assert selectd["previous"] == [orjson.loads(tier_1_output.value)["selectd"]], "tier 1's object, unchanged"
        earlier = selectd["previous"][0]
        assert earlier["decision"] == "accepted" and earlier["topic"] == first.accepted
        assert set(earlier["scores"]) == {"gopher"} and set(selectd["scores"]) == {"fineweb"}
        assert {k: v for k, v in body.items() if k != "selectd"} == \
               {k: v for k, v in orjson.loads(originals[message.key]).items()}
    assert by_stage["gopher"] and by_stage["fineweb"] and by_stage["accepted"], by_stage
    assert len(between) == by_stage["fineweb"] + by_stage["accepted"]
