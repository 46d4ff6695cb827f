"""Routing: turn each parsed record's verdict (or parse failure) into output messages.

Accepted documents go to the first route whose rules all pass, else to ``topics.accepted``;
rejected ones to ``topics.rejected``; unusable input to ``topics.dlq`` with the original bytes.
The output value is the original JSON bytes with a ``selectd`` object spliced in before the
closing brace, so every input field stays byte-for-byte as the producer wrote it.

An input that already has a ``selectd`` member (a document coming from an earlier selectd tier)
keeps it: the earlier object moves into the new one's ``previous`` list, oldest tier first, so a
document passing two tiers carries both tiers' scores.
"""
from __future__ import annotations

from typing import Any

import orjson

from selectd import __version__
from selectd.cascade import ShadowVerdict, Verdict, signal_list
from selectd.config import Config, RouteConfig
from selectd.records import Document, Invalid, Outcome, Output, dead_letter, source_headers


def splice_object(original: bytes, obj: dict[str, Any], key: str, addition: dict[str, Any]) -> bytes:
    """``original`` JSON object bytes with ``"key": addition`` appended as its last member.

    An existing ``key`` member is replaced. When it is the last member, as written by this function
    (an earlier tier's output), it is cut off the bytes and the rest stays as it was; anywhere else
    the object is re-serialised."""
    body = original.rstrip()
    if key in obj:
        own_splice = b',"%s":%s}' % (key.encode(), orjson.dumps(obj[key]))
        if not body.endswith(own_splice):
            return orjson.dumps({**obj, key: addition})
        body = body[:-len(own_splice)] + b"}"
    if not body.endswith(b"}"):
        return orjson.dumps({**obj, key: addition})
    return b"%s,\"%s\":%s}" % (body[:-1], key.encode(), orjson.dumps(addition))


def route_signal_problems(routes: list[RouteConfig], emitted: dict[str, set[str]]) -> list[str]:
    """One line per route rule naming a signal its stage does not emit (``emitted``: each enabled
    stage's signals, from :meth:`selectd.cascade.Cascade.warmup`): such a route would never match."""
    problems = []
    for r, route in enumerate(routes):
        for w, rule in enumerate(route.when):
            stage, signal = rule.signal.split(".", 1)
            if signal not in emitted.get(stage, {signal}):
                problems.append(f"routes[{r}].when[{w}].signal: {rule.signal!r}: stage {stage!r} does not emit "
                                f"{signal!r}; it emits {signal_list(emitted[stage])}")
    return problems


def earlier_tiers(earlier: Any) -> list[Any]:
    """The ``previous`` list of a document whose input had ``selectd`` = ``earlier``: that object's own
    ``previous`` entries, then the object itself without them (any other value: kept as one entry)."""
    if isinstance(earlier, dict) and isinstance(earlier.get("previous"), list):
        return [*earlier["previous"], {k: v for k, v in earlier.items() if k != "previous"}]
    return [earlier]


def shadow_object(shadow: ShadowVerdict) -> dict[str, Any]:
    if shadow.accepted:
        return {"decision": "accepted", "scores": shadow.scores}
    return {"decision": "rejected", "reason": shadow.reason, "scores": shadow.scores}


class Router:
    def __init__(self, config: Config, model_versions: dict[str, dict[str, str]]):
        self.topics = config.topics
        self.routes: list[RouteConfig] = config.routes
        self.versions = {"selectd": __version__, "config": config.digest, "models": model_versions}

    def route_for(self, verdict: Verdict) -> tuple[str, str]:
        for route in self.routes:
            if all(self._passes(rule, verdict) for rule in route.when):
                return route.name, route.topic
        return "default", self.topics.accepted

    @staticmethod
    def _passes(rule, verdict: Verdict) -> bool:
        stage, signal = rule.signal.split(".", 1)
        value = verdict.scores.get(stage, {}).get(signal)
        if value is None:
            return False
        return rule.passes_value(value)

    def outputs_for(self, doc: Document, verdict: Verdict) -> list[Output]:
        record = doc.record
        if verdict.accepted:
            route, topic = self.route_for(verdict)
            decision: dict[str, Any] = {"decision": "accepted", "route": route, "topic": topic}
            outcome: Outcome = "accepted"
        else:
            topic = self.topics.rejected
            decision = {"decision": "rejected", "topic": topic, "stage": verdict.stage, "reason": verdict.reason}
            outcome = "rejected"
        decision["scores"] = verdict.scores
        if verdict.shadow:
            decision["shadow"] = {stage: shadow_object(shadow) for stage, shadow in verdict.shadow.items()}
        decision["versions"] = self.versions
        if "selectd" in doc.fields:
            decision["previous"] = earlier_tiers(doc.fields["selectd"])
        value = splice_object(record.value, doc.fields, "selectd", decision)
        outputs = [Output(topic, record.key, value, source_headers(record), outcome, verdict.reason, record, doc.id,
                          verdict.stage)]
        if self.topics.attributes:
            outputs.append(self._attributes(doc, verdict))
        return outputs

    def _attributes(self, doc: Document, verdict: Verdict) -> Output:
        # Dolma attribute format: name -> [[start, end, score]] spans; ours are whole-document spans.
        end = len(doc.text)
        attributes = {f"selectd__{stage}__{signal}": [[0, end, value]]
                      for stage, signals in verdict.scores.items() for signal, value in signals.items()}
        for stage, shadow in verdict.shadow.items():
            attributes.update({f"selectd__{stage}__{signal}": [[0, end, value]] for signal, value in shadow.scores.items()})
            attributes[f"selectd__{stage}__shadow_decision"] = [[0, end, "accepted" if shadow.accepted else "rejected"]]
            if not shadow.accepted:
                attributes[f"selectd__{stage}__shadow_reason"] = [[0, end, shadow.reason]]
        value = orjson.dumps({"id": doc.id, "source": doc.record.topic, "attributes": attributes})
        return Output(self.topics.attributes, doc.id.encode(), value, source_headers(doc.record),
                      "attributes", None, doc.record, doc.id)

    def dead_letter(self, invalid: Invalid) -> Output:
        return dead_letter(invalid.record, self.topics.dlq, invalid.reason, invalid.detail, doc_id=invalid.doc_id)
