"""Every config key is read by the daemon and documented in deploy/selectd.example.toml.

The keys come from walking the pydantic ``Config`` model (into nested sections, stages, their
selection and rules, routes). A key counts as read when a runtime module outside ``config.py``
(whose validators read keys only to check them) both accesses it as an attribute and handles the
model that owns it: names its class, or the key under which it hangs (``config.kafka``,
``stage.select``, ``route.when``...). A key is documented when the example config assigns it
(``key =``, commented out when optional) in the table it belongs to; a key of an inline table
(``select = {...}``, ``rules = [{...}]``) on a line that names that table.
"""
from __future__ import annotations

import ast
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from selectd.config import REMOVED_KEYS, Config, ConfigError, config_from_dict

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "selectd.example.toml"
#: offline tools: what they read is not the daemon reading a key
TOOLS = "selectd/tools/"
#: keys used before the model exists: plugins are imported first, so that their scorer types validate
READ_BEFORE_VALIDATION = {(Config, "plugins")}


@dataclass(frozen=True)
class Key:
    path: tuple[str, ...]  # ("stages", "[]", "select", "warmup_docs")
    model: type[BaseModel]
    field: str

    def __str__(self) -> str:
        return ".".join(self.path).replace(".[]", "[]")


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_list(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return origin is list


def config_keys(model: type[BaseModel] = Config, path: tuple[str, ...] = ()) -> list[Key]:
    keys = []
    for name, field in model.model_fields.items():
        key = path + (field.alias or name,)
        keys.append(Key(key, model, name))
        for sub in _models_in(field.annotation):
            keys += config_keys(sub, key + (("[]",) if _is_list(field.annotation) else ()))
    return keys


KEYS = config_keys()


def _runtime_modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted((REPO / "selectd").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative == "selectd/config.py" or relative.startswith(TOOLS):
            continue
        modules[relative] = ast.parse(path.read_text(), relative)
    return modules


def _names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(attributes accessed, every identifier) of a module."""
    attributes, identifiers = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attributes.add(node.attr)
            identifiers.add(node.attr)
        elif isinstance(node, ast.Name):
            identifiers.add(node.id)
        elif isinstance(node, ast.alias):
            identifiers.add(node.asname or node.name.rsplit(".", 1)[-1])
        elif isinstance(node, ast.ClassDef):
            identifiers.add(node.name)
    return attributes, identifiers


def _owner_names(key: Key) -> set[str]:
    """How code refers to the model owning ``key``: its class name, the key it hangs under."""
    parents = [part for part in key.path[:-1] if part != "[]"]
    return {key.model.__name__} | ({parents[-1]} if parents else set())


def test_every_config_key_is_read_by_the_daemon():
    modules = {name: _names(tree) for name, tree in _runtime_modules().items()}
    unread = [str(key) for key in KEYS if (key.model, key.field) not in READ_BEFORE_VALIDATION
              and not any(key.field in attributes and _owner_names(key) & identifiers
                          for attributes, identifiers in modules.values())]
    assert unread == [], f"config keys no runtime module reads: {unread}"


def _regions(text: str) -> dict[str, str]:
    """Text of each table of the TOML (all its [[array]] entries together), each with the comments just
    above its header when they name the table (they introduce it); '' is the whole file."""
    lines = text.splitlines()
    headers = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r"^\[\[?([\w.]+)\]\]?\s*$", line))]
    starts = []
    for index, name in headers:
        start = index
        while start > 0 and (not lines[start - 1].strip() or lines[start - 1].lstrip().startswith("#")):
            start -= 1
        introduces = re.search(rf"\b{name}\b", "\n".join(lines[start:index]), re.I)
        starts.append(start if introduces else index)
    regions: dict[str, str] = {"": text}
    for n, (_, name) in enumerate(headers):
        end = starts[n + 1] if n + 1 < len(headers) else len(lines)
        regions[name] = regions.get(name, "") + "\n".join(lines[starts[n]:end]) + "\n"
    return regions


def _documented(key: Key, regions: dict[str, str]) -> bool:
    parts = [part for part in key.path if part != "[]"]
    if len(parts) == 1 and parts[0] in regions:  # a table: its header
        return True
    region = regions.get(parts[0], "") if len(parts) > 1 else regions[""]
    if len(parts) > 2:  # a key of an inline table: on a line naming that table
        region = "\n".join(line for line in region.splitlines() if re.search(rf"\b{parts[-2]}\b", line))
    return re.search(rf"(^|[\s{{,\[#]){re.escape(key.path[-1])}\s*=", region, re.M) is not None


def test_every_config_key_is_documented_in_the_example():
    regions = _regions(EXAMPLE.read_text())
    # A model used in several places (rules in stages and in routes) is documented once.
    documented = {(key.model, key.field) for key in KEYS if _documented(key, regions)}
    missing = sorted({str(key) for key in KEYS if (key.model, key.field) not in documented})
    assert missing == [], f"config keys deploy/selectd.example.toml does not document: {missing}"


def test_the_walk_sees_nested_and_aliased_keys():
    paths = {str(key) for key in KEYS}
    assert {"kafka.bootstrap_servers", "stages[].select.warmup_docs", "stages[].rules[].in", "routes[].when[].min",
            "logging.progress_interval_s", "plugins"} <= paths


def test_the_removed_select_window_is_a_clear_error():
    assert "stages[].select.window" in REMOVED_KEYS and "stages[].select.window" not in {str(key) for key in KEYS}
    data = {"kafka": {"bootstrap_servers": ["x:1"], "group_id": "g", "input_topics": ["in"]},
            "topics": {"accepted": "a", "rejected": "r", "dlq": "d"},
            "stages": [{"name": "g", "type": "gopher_quality",
                        "select": {"signal": "n_words", "keep_fraction": 0.5, "window": 100}}]}
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert str(error.value) == f"stages[0].select.window: {REMOVED_KEYS['stages[].select.window']}"
