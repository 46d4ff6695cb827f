"""``selectd compare``: what a candidate config would decide differently from the live one, offline.

Both pipelines run over the same JSONL file in the same batches (so streaming selection sees the
same windows); the table says how many documents each keeps, which stage rejects them and why,
and which documents change side (kept by one, rejected by the other).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selectd.config import Config
from selectd.pipeline import Pipeline
from selectd.records import Output
from selectd.sources.jsonl import open_input, read_batches


@dataclass(frozen=True)
class Decision:
    """One document's primary output under one config."""
    outcome: str          # accepted | rejected | dlq
    topic: str
    stage: str | None
    reason: str | None

    @classmethod
    def of(cls, output: Output) -> "Decision":
        return cls(output.outcome, output.topic, output.stage, output.reason)

    def describe(self) -> str:
        if self.outcome == "accepted":
            return f"accepted ({self.topic})"
        if self.outcome == "rejected":
            return f"rejected by {self.stage} ({self.reason})"
        return f"dlq ({self.reason})"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.outcome, "topic": self.topic}
        if self.outcome == "rejected":
            out.update(stage=self.stage, reason=self.reason)
        elif self.outcome == "dlq":
            out["reason"] = self.reason
        return out


def _side(decisions: list[Decision]) -> dict[str, Any]:
    outcomes = collections.Counter(d.outcome for d in decisions)
    by_stage: dict[str, dict[str, int]] = {}
    for d in decisions:
        if d.outcome == "rejected":
            reasons = by_stage.setdefault(d.stage, {})
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
    return {"accepted": outcomes["accepted"], "rejected": outcomes["rejected"], "dlq": outcomes["dlq"],
            "accepted_by_topic": dict(collections.Counter(d.topic for d in decisions if d.outcome == "accepted")),
            "rejected_by_stage": by_stage}


def compare_files(live: Config, candidate: Config, in_path: Path, batch_size: int | None = None,
                  names: tuple[str, str] = ("live", "candidate")) -> dict[str, Any]:
    """The decision table of two configs over ``in_path`` (see :func:`table_lines` for the text form)."""
    pipelines = [Pipeline.from_config(live), Pipeline.from_config(candidate)]
    ids: list[str | None] = []  # None for a line that is not a document
    decisions: tuple[list[Decision], list[Decision]] = ([], [])
    try:
        with open_input(in_path) as (lines, name):
            for records in read_batches(lines, name, batch_size or live.batch.max_docs):
                for pipeline, decided in zip(pipelines, decisions):
                    primary = [out for out in pipeline.process(records) if out.outcome != "attributes"]
                    decided.extend(Decision.of(out) for out in primary)
                ids.extend(out.doc_id for out in primary)  # the same documents under either config
    finally:
        for pipeline in pipelines:
            pipeline.close()
    before, after = decisions
    changed = [{"line": index + 1, "id": ids[index], "live": a.as_json(), "candidate": b.as_json()}
               for index, (a, b) in enumerate(zip(before, after))
               if {a.outcome, b.outcome} == {"accepted", "rejected"}]
    transitions = collections.Counter((a.describe() if a.outcome == "rejected" else a.outcome,
                                       b.describe() if b.outcome == "rejected" else b.outcome)
                                      for a, b in zip(before, after) if {a.outcome, b.outcome} == {"accepted", "rejected"})
    return {
        "input": str(in_path), "documents": len(before),
        "live": {"config": names[0], "digest": live.digest, **_side(before)},
        "candidate": {"config": names[1], "digest": candidate.digest, **_side(after)},
        "accepted_to_rejected": sum(1 for c in changed if c["live"]["decision"] == "accepted"),
        "rejected_to_accepted": sum(1 for c in changed if c["live"]["decision"] == "rejected"),
        "rerouted": sum(1 for a, b in zip(before, after) if a.outcome == b.outcome == "accepted" and a.topic != b.topic),
        "rejected_otherwise": sum(1 for a, b in zip(before, after)
                                  if a.outcome == b.outcome == "rejected" and (a.stage, a.reason) != (b.stage, b.reason)),
        "transitions": [{"live": a, "candidate": b, "documents": n} for (a, b), n in transitions.most_common()],
        "changed": changed,
    }


def table_lines(result: dict[str, Any], show: int = 20) -> list[str]:
    """The comparison as a text table; ``show``: how many of the documents that change side to list."""
    live, cand = result["live"], result["candidate"]
    n = result["documents"] or 1
    width = 44
    live_name, cand_name = (Path(side["config"]).name for side in (live, cand))
    out = [f"{result['documents']} documents of {result['input']}",
           f"{'':<{width}}{'live':>16}{'candidate':>16}",
           f"{'':<{width}}{live_name[-15:]:>16}{cand_name[-15:]:>16}"]

    def row(label: str, a: int, b: int, share: bool = False) -> str:
        cells = (f"{a:>8,} {a / n:6.1%}", f"{b:>8,} {b / n:6.1%}") if share else (f"{a:>15,}", f"{b:>15,}")
        return f"{label:<{width}}" + "".join(f"{cell:>16}" for cell in cells)

    out.append(row("kept (accepted)", live["accepted"], cand["accepted"], share=True))
    for topic in sorted(set(live["accepted_by_topic"]) | set(cand["accepted_by_topic"])):
        out.append(row(f"  to {topic}", live["accepted_by_topic"].get(topic, 0), cand["accepted_by_topic"].get(topic, 0)))
    out.append(row("rejected", live["rejected"], cand["rejected"], share=True))
    stages = list(dict.fromkeys([*live["rejected_by_stage"], *cand["rejected_by_stage"]]))
    for stage in stages:
        a, b = live["rejected_by_stage"].get(stage, {}), cand["rejected_by_stage"].get(stage, {})
        for reason in sorted(set(a) | set(b)):
            out.append(row(f"  {stage}: {reason}", a.get(reason, 0), b.get(reason, 0)))
    out.append(row("dead-lettered", live["dlq"], cand["dlq"]))
    out.append("")
    out.append(f"change side: {len(result['changed'])} documents (kept -> rejected {result['accepted_to_rejected']}, "
               f"rejected -> kept {result['rejected_to_accepted']}); rerouted: {result['rerouted']}; "
               f"rejected by another stage or reason: {result['rejected_otherwise']}")
    for transition in result["transitions"]:
        out.append(f"  {transition['live']} -> {transition['candidate']}: {transition['documents']}")
    if result["changed"] and show:
        out.append(f"documents that change side (first {min(show, len(result['changed']))}):")
        for change in result["changed"][:show]:
            a, b = (Decision(c["decision"], c["topic"], c.get("stage"), c.get("reason")).describe()
                    for c in (change["live"], change["candidate"]))
            out.append(f"  line {change['line']} {change['id']}: {a} -> {b}")
    return out
