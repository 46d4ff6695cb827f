"""``selectd status``: summarise a running daemon from its /metrics endpoint."""
from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(url: str, timeout_s: float = 5) -> list[Sample]:
    body = urllib.request.urlopen(url, timeout=timeout_s).read().decode()
    return [Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(body) for s in family.samples]


def total(samples: list[Sample], name: str, **match: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in match.items()))


def by_label(samples: list[Sample], name: str, *labels: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for s in samples:
        if s.name == name:
            out["/".join(s.labels.get(label, "") for label in labels)] += s.value
    return dict(out)


def summary_lines(before: list[Sample], after: list[Sample], seconds: float) -> list[str]:
    def rate(name: str, **match: str) -> float:
        return (total(after, name, **match) - total(before, name, **match)) / seconds

    version = next((s.labels.get("version", "?") for s in after if s.name == "selectd_build_info"), "?")
    last = total(after, "selectd_last_processed_timestamp_seconds")
    lines = [
        f"selectd {version}: {'READY' if total(after, 'selectd_ready') == 1 else 'NOT READY'}"
        f" (broker {'up' if total(after, 'selectd_broker_up') == 1 else 'down'})",
        f"assigned partitions: {int(total(after, 'selectd_assigned_partitions'))}, "
        f"rebalances: {int(total(after, 'selectd_rebalances_total'))}",
        f"consumer lag: {int(total(after, 'selectd_consumer_lag_messages'))} messages",
    ]
    lag = by_label(after, "selectd_consumer_lag_messages", "topic", "partition")
    lines += [f"  {key}: {int(value)}" for key, value in sorted(lag.items())]
    lines.append(f"rate over {seconds:.1f} s: in {rate('selectd_documents_in_total'):,.1f} docs/s, "
                 + ", ".join(f"{o} {rate('selectd_documents_out_total', outcome=o):,.1f}/s"
                             for o in ("accepted", "rejected", "dlq")))
    outcomes = by_label(after, "selectd_documents_out_total", "outcome")
    lines.append("totals: in " + str(int(total(after, "selectd_documents_in_total"))) + ", "
                 + ", ".join(f"{k} {int(v)}" for k, v in sorted(outcomes.items())))
    for title, name, labels in (("rejections", "selectd_rejections_total", ("stage", "reason")),
                                ("dead letters", "selectd_dead_letters_total", ("reason",))):
        rows = sorted(((k, v) for k, v in by_label(after, name, *labels).items() if v), key=lambda kv: -kv[1])
        if rows:
            lines.append(f"{title}:")
            lines += [f"  {k}: {int(v)}" for k, v in rows[:10]]
    failures = total(after, "selectd_commit_failures_total") + total(after, "selectd_produce_failures_total")
    lines.append(f"commit/produce failures: {int(failures)}; "
                 f"last processed: {'never' if not last else f'{time.time() - last:.0f} s ago'}")
    return lines


def status(url: str, interval_s: float = 2.0) -> list[str]:
    before = scrape(url)
    began = time.monotonic()
    time.sleep(interval_s)
    after = scrape(url)
    return summary_lines(before, after, time.monotonic() - began)
