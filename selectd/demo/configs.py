"""Daemon configs for a local broker, written as TOML: the demo, the load tests and the tests all
write theirs with :func:`write_config`, pointed at their broker by :func:`on_broker`."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

#: group timeouts short enough that a member joins (and a lost one is noticed) within seconds: a
#: join waits up to max_poll_interval_ms for the other members (librdkafka wants it >= the session timeout)
QUICK_JOIN = {"max_poll_interval_ms": 6000, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def on_broker(data: dict[str, Any], bootstrap: str, **kafka: Any) -> dict[str, Any]:
    """A copy of the config ``data`` whose ``[kafka]`` points at ``bootstrap`` with :data:`QUICK_JOIN`
    timeouts, then the ``kafka`` keys given."""
    data = copy.deepcopy(data)
    data["kafka"] = {**data.get("kafka", {}), "bootstrap_servers": [bootstrap], **QUICK_JOIN, **kafka}
    return data


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for selectd configs: top-level keys, tables, arrays of tables; values are scalars,
    lists and inline tables."""
    def key(name: str) -> str:
        return name if _BARE_KEY.match(name) else json.dumps(name)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"no TOML for {type(v).__name__}")

    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, dict) and not is_table_array(v)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{key(name)}]")
            lines += [f"{key(k)} = {value(v)}" for k, v in table.items()]
        elif is_table_array(table):
            for item in table:
                lines.append(f"\n[[{key(name)}]]")
                lines += [f"{key(k)} = {value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(to_toml(data))
    return path
