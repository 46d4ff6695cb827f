"""JSONL file source for ``selectd score``: one record per line, same parse and validation as Kafka."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from selectd.records import Record


def read_batches(path: Path, batch_size: int) -> Iterator[list[Record]]:
    """Every line (blank ones included, so each input line yields one output) as a Record whose
    topic is the file name and offset the 0-based line index."""
    batch: list[Record] = []
    with open(path, "rb") as handle:
        for index, line in enumerate(handle):
            batch.append(Record(path.name, 0, index, None, line.rstrip(b"\r\n")))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
