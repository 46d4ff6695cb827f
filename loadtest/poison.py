"""Poison-input corpus: malformed messages interleaved with good documents, each with its expected fate.

    python -m loadtest.poison --bad 10000 --out poison.jsonl   # a description of every message (no payloads)

Every message carries what the daemon must do with it: ``expected`` is ``"routed"`` (a good document:
accepted or rejected by the cascade) or a DLQ reason from ``selectd.records.DLQ_REASONS``. The checks
(:func:`check_outputs`) match outputs to inputs by the ``selectd.source.partition/offset`` headers, so
messages with no key, empty keys or odd keys are tracked as reliably as the others.

Malformed kinds: invalid JSON (truncated, single quotes, trailing data, empty payload, raw control
bytes), JSON nested deeper than any parser allows, huge strings, NUL bytes (raw: invalid; escaped:
a valid document), lone surrogates (escaped and raw), invalid UTF-8, wrong types at the top level and
for ``id`` / ``text``, texts over ``max_text_bytes`` up to 10 MB, values over ``max_message_bytes``,
tombstones, and odd headers and keys on good and bad messages alike. A good document whose *output*
the producer cannot send (a huge extra field) must end in the DLQ as ``produce_failed``.
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import orjson

GOOD_TEXT = ("Rivers carry sediment from the mountains to the sea, and the deltas they build change "
             "shape with every flood season. Farmers have planted on this fertile ground for thousands "
             "of years, reading the water to decide when to sow. ")
MB = 1_000_000


@dataclass(slots=True)
class Message:
    kind: str                 # what was generated, e.g. "invalid_utf8/truncated"
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    expected: str = "routed"  # "routed" or the DLQ reason the daemon must give

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)


def good(i: int, rng: random.Random, **extra) -> bytes:
    return orjson.dumps({"id": f"good-{i}", "text": GOOD_TEXT * rng.randint(2, 6), "n": i, **extra})


def _odd_headers(rng: random.Random, i: int) -> list[tuple[str, bytes]]:
    choice = rng.randrange(5)
    if choice == 0:
        return [("bin", bytes(rng.randrange(256) for _ in range(64)))]
    if choice == 1:
        return [(f"h{j}", b"v" * j) for j in range(100)]  # many headers
    if choice == 2:
        return [("", b""), ("\u00e9t\u00e9-\u6f22\u5b57", "caf\u00e9".encode())]  # empty and non-ASCII names
    if choice == 3:
        return [("selectd.reason", b"forged"), ("dup", b"1"), ("dup", b"2")]  # names we use, repeated names
    return [("big", b"x" * 20_000)]


def _odd_key(rng: random.Random, i: int) -> bytes | None:
    choice = rng.randrange(4)
    return [None, b"", bytes([0, 255, 254]) + str(i).encode(), b"k" * 10_000][choice]


def _bad_kinds(limits: "Limits") -> list[tuple[str, str, Callable[[int, random.Random], bytes | None]]]:
    """(kind, expected DLQ reason, value generator)."""
    text_ok = GOOD_TEXT
    deep = 5_000  # past any JSON parser's nesting limit (orjson: 1024)
    return [
        ("invalid_json/truncated", "invalid_json", lambda i, r: orjson.dumps({"id": f"b{i}", "text": text_ok})[:-r.randint(1, 20)]),
        ("invalid_json/single_quotes", "invalid_json", lambda i, r: b"{'id': 'b%d', 'text': 'x'}" % i),
        ("invalid_json/trailing", "invalid_json", lambda i, r: orjson.dumps({"id": f"b{i}", "text": text_ok}) + b" {}"),
        ("invalid_json/nan", "invalid_json", lambda i, r: b'{"id": "b%d", "text": "x", "score": NaN}' % i),
        ("invalid_json/empty_payload", "invalid_json", lambda i, r: b""),
        ("invalid_json/whitespace_payload", "invalid_json", lambda i, r: b" \n\t "),
        ("invalid_json/raw_nul", "invalid_json", lambda i, r: b'{"id": "b%d", "text": "a\x00b"}' % i),
        ("invalid_json/raw_control", "invalid_json", lambda i, r: b'{"id": "b%d", "text": "a\x01\x1fb"}' % i),
        ("invalid_json/deep_array", "invalid_json", lambda i, r: b'{"id": "b%d", "text": "x", "d": ' % i + b"[" * deep + b"]" * deep + b"}"),
        ("invalid_json/deep_object", "invalid_json", lambda i, r: b'{"a":' * deep + b"1" + b"}" * deep),
        ("invalid_unicode/lone_high_surrogate", "invalid_unicode", lambda i, r: b'{"id": "b%d", "text": "a\\ud800b"}' % i),
        ("invalid_unicode/lone_low_surrogate", "invalid_unicode", lambda i, r: b'{"id": "b%d", "text": "\\udc00"}' % i),
        ("invalid_utf8/raw_surrogate", "invalid_utf8", lambda i, r: b'{"id": "b%d", "text": "a\xed\xa0\x80b"}' % i),
        ("invalid_utf8/bytes", "invalid_utf8", lambda i, r: b'{"id": "b%d", "text": "\xff\xfe"}' % i),
        ("invalid_utf8/overlong", "invalid_utf8", lambda i, r: b'{"id": "b%d", "text": "\xc0\xaf"}' % i),
        ("invalid_utf8/truncated_multibyte", "invalid_utf8", lambda i, r: b'{"id": "b%d", "text": "caf\xc3"}' % i),
        ("invalid_utf8/latin1", "invalid_utf8", lambda i, r: '{"id": "b%d", "text": "caf\u00e9 cr\u00e8me"}'.encode("latin-1") % i),
        ("not_an_object/array", "not_an_object", lambda i, r: orjson.dumps([f"b{i}", text_ok])),
        ("not_an_object/string", "not_an_object", lambda i, r: orjson.dumps(text_ok)),
        ("not_an_object/number", "not_an_object", lambda i, r: str(i).encode()),
        ("not_an_object/null", "not_an_object", lambda i, r: b"null"),
        ("missing_id/empty_object", "missing_id", lambda i, r: b"{}"),
        ("missing_id/null", "missing_id", lambda i, r: orjson.dumps({"id": None, "text": text_ok})),
        ("id_not_string/int", "id_not_string", lambda i, r: orjson.dumps({"id": i, "text": text_ok})),
        ("id_not_string/list", "id_not_string", lambda i, r: orjson.dumps({"id": [i], "text": text_ok})),
        ("id_not_string/bool", "id_not_string", lambda i, r: orjson.dumps({"id": True, "text": text_ok})),
        ("missing_text/absent", "missing_text", lambda i, r: orjson.dumps({"id": f"b{i}", "body": text_ok})),
        ("text_not_string/number", "text_not_string", lambda i, r: orjson.dumps({"id": f"b{i}", "text": 3.5})),
        ("text_not_string/object", "text_not_string", lambda i, r: orjson.dumps({"id": f"b{i}", "text": {"t": text_ok}})),
        ("text_not_string/bool", "text_not_string", lambda i, r: orjson.dumps({"id": f"b{i}", "text": False})),
        ("empty_text/empty", "empty_text", lambda i, r: orjson.dumps({"id": f"b{i}", "text": ""})),
        ("empty_text/whitespace", "empty_text", lambda i, r: orjson.dumps({"id": f"b{i}", "text": " \n\t\u3000 "})),
        ("text_too_large/just_over", "text_too_large",
         lambda i, r: orjson.dumps({"id": f"b{i}", "text": "a" * (limits.max_text_bytes + 1)})),
        ("text_too_large/multibyte", "text_too_large",
         lambda i, r: orjson.dumps({"id": f"b{i}", "text": "\u6f22" * (limits.max_text_bytes // 3 + 1)})),
    ]


@dataclass(frozen=True)
class Limits:
    """The daemon's limits the corpus is built against; the daemon must run with :meth:`input_toml`
    (the producer's ``max_request_size`` is kafka-python's default). ``max_text_bytes`` is small so the
    hundreds of just-over-the-limit texts stay cheap; the 10 MB texts sit under ``max_message_bytes``."""
    max_text_bytes: int = 20_000
    max_message_bytes: int = 12_000_000
    max_request_size: int = 1_048_576

    def input_toml(self) -> str:
        return f"[input]\nmax_text_bytes = {self.max_text_bytes}\nmax_message_bytes = {self.max_message_bytes}\n"


def generate(n_bad: int = 10_000, good_per_bad: float = 1.0, seed: int = 0, limits: Limits = Limits(),
             huge_texts: int = 3, huge_text_bytes: int = 10 * MB) -> Iterator[Message]:
    """``n_bad`` malformed messages cycling through every kind, good documents interleaved at random
    (``good_per_bad`` on average), ``huge_texts`` texts of ``huge_text_bytes`` and one value over
    ``max_message_bytes`` (these large ones are few: each costs the broker and the daemon real memory)."""
    rng = random.Random(seed)
    kinds = _bad_kinds(limits)
    specials: dict[int, Message] = {}
    positions = rng.sample(range(n_bad), min(n_bad, huge_texts + 3))
    for j, position in enumerate(positions[:huge_texts]):
        specials[position] = Message("text_too_large/huge", f"huge-{j}".encode(),
                                     orjson.dumps({"id": f"huge-{j}", "text": "z" * huge_text_bytes}),
                                     expected="text_too_large" if huge_text_bytes > limits.max_text_bytes else "routed")
    extra = positions[huge_texts:]
    if len(extra) == 3:
        over = limits.max_message_bytes + 1
        specials[extra[0]] = Message("message_too_large/value", b"over", b"{" + b" " * (over - 2) + b"}",
                                     expected="message_too_large")
        specials[extra[1]] = Message("tombstone/odd_headers", b"tomb-h", None, [("x", b"\x00" * 10)], "tombstone")
        # A valid document whose output cannot be produced (a huge extra field): dead-lettered, not lost.
        specials[extra[2]] = Message("produce_failed/huge_field", b"wide",
                                     good(-1, rng, blob="w" * (limits.max_request_size + 1000)), expected="produce_failed")
    n_good = 0
    for i in range(n_bad):
        while rng.random() < good_per_bad / (1 + good_per_bad):
            headers = _odd_headers(rng, n_good) if rng.random() < 0.2 else []
            key = _odd_key(rng, n_good) if rng.random() < 0.1 else f"good-{n_good}".encode()
            kind = "good/escaped_nul" if n_good % 50 == 0 else "good"
            value = (orjson.dumps({"id": f"good-{n_good}", "text": GOOD_TEXT * 3 + "\u0000 end"}) if kind == "good/escaped_nul"
                     else good(n_good, rng))
            yield Message(kind, key, value, headers, "routed")
            n_good += 1
        if i in specials:
            yield specials[i]
            continue
        if i % 40 == 0:
            yield Message("tombstone", f"tomb-{i}".encode(), None, [], "tombstone")
            continue
        kind, reason, make = kinds[i % len(kinds)]
        headers = _odd_headers(rng, i) if rng.random() < 0.2 else []
        key = _odd_key(rng, i) if rng.random() < 0.2 else f"bad-{i}".encode()
        yield Message(kind, key, make(i, rng), headers, reason)


def produce_corpus(bootstrap: str, topic: str, messages: list[Message]) -> dict[tuple[int, int], Message]:
    """Send every message; returns (partition, offset) → message, from the broker's acknowledgements."""
    from kafka import KafkaProducer

    largest = max(m.size for m in messages)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=largest + 65_536,
                             client_id="loadtest-poison")
    try:
        futures = [(m, producer.send(topic, key=m.key, value=m.value, headers=m.headers)) for m in messages]
        producer.flush()
        placed = {}
        for message, future in futures:
            meta = future.get(timeout=60)
            placed[(meta.partition, meta.offset)] = message
        return placed
    finally:
        producer.close()


@dataclass
class PoisonReport:
    tried: int
    bad: int
    good: int
    missing: list[str]                  # kinds of inputs with no output
    wrong: list[str]                    # "kind: expected X, got Y"
    duplicates: int
    dlq_by_reason: Counter
    kinds: Counter

    @property
    def ok(self) -> bool:
        return not self.missing and not self.wrong

    def lines(self) -> list[str]:
        out = [f"poison messages tried: {self.bad} malformed + {self.good} good = {self.tried}",
               f"missing outputs: {len(self.missing)}   wrong outcome: {len(self.wrong)}   duplicates: {self.duplicates}",
               "DLQ by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dlq_by_reason.items()))]
        out += [f"  missing: {m}" for m in self.missing[:10]] + [f"  wrong: {w}" for w in self.wrong[:10]]
        return out


def check_outputs(placed: dict[tuple[int, int], Message], outputs: list[tuple[str, dict[str, bytes]]],
                  dlq_topic: str) -> PoisonReport:
    """Every input produced an output: good ones routed (not DLQ), bad ones in the DLQ with their reason.
    ``outputs``: (topic, headers) of every output message."""
    seen: Counter = Counter()
    wrong = []
    dlq_by_reason: Counter = Counter()
    for topic, headers in outputs:
        where = (int(headers["selectd.source.partition"]), int(headers["selectd.source.offset"]))
        seen[where] += 1
        if seen[where] > 1:
            continue
        message = placed.get(where)
        if message is None:
            continue
        reason = headers.get("selectd.reason", b"").decode() if topic == dlq_topic else None
        if topic == dlq_topic:
            dlq_by_reason[reason] += 1
        got = "routed" if reason is None else reason
        if got != message.expected:
            wrong.append(f"{message.kind} at {where}: expected {message.expected}, got {got}")
    missing = [f"{m.kind} at {where}" for where, m in placed.items() if where not in seen]
    kinds = Counter(m.kind.split("/")[0] for m in placed.values())
    n_good = sum(1 for m in placed.values() if m.expected == "routed")
    return PoisonReport(len(placed), len(placed) - n_good, n_good, missing, wrong,
                        sum(c - 1 for c in seen.values()), dlq_by_reason, kinds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.poison", description=__doc__.splitlines()[0])
    parser.add_argument("--bad", type=int, default=10_000, help="malformed messages (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSONL: kind, expected, sizes of every message")
    args = parser.parse_args(argv)
    counts: Counter = Counter()
    with open(args.out, "wb") as out:
        for message in generate(args.bad, seed=args.seed):
            counts[message.expected] += 1
            out.write(orjson.dumps({"kind": message.kind, "expected": message.expected, "value_bytes": len(message.value or b""),
                                    "key_bytes": None if message.key is None else len(message.key),
                                    "headers": len(message.headers)}) + b"\n")
    print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
