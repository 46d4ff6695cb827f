"""Parse and validate raw input records; anything unusable becomes an :class:`Invalid` with a reason
(the router dead-letters it).

Runs before any scorer: a message that is not a JSON object with a string id and a non-empty
string text (valid UTF-8, within the byte limits) never reaches the cascade.
"""
from __future__ import annotations

import orjson

from selectd.records import Document, Invalid, Record


def parse_record(record: Record, max_message_bytes: int, max_text_bytes: int, id_key: str = "id",
                 text_key: str = "text") -> Document | Invalid:
    """``id_key`` / ``text_key``: the fields holding the id and the text (``[input]``; datatrove's and NeMo
    Curator's readers name them the same way). An :class:`Invalid` carries the id when there was one."""
    value = record.value
    if value is None:
        return Invalid(record, "tombstone", "null message value")
    if len(value) > max_message_bytes:
        return Invalid(record, "message_too_large", f"{len(value)} bytes > {max_message_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 and lone surrogates as JSON errors; name them apart.
        message = str(exc)
        if "utf-8" in message.lower():
            return Invalid(record, "invalid_utf8", message[:200])
        if "surrogate" in message.lower():
            return Invalid(record, "invalid_unicode", message[:200])
        return Invalid(record, "invalid_json", message[:200])
    if not isinstance(obj, dict):
        return Invalid(record, "not_an_object", f"top-level JSON {type(obj).__name__}")
    doc_id = obj.get(id_key)
    if doc_id is None:
        return Invalid(record, "missing_id", f"no {id_key!r} field" if id_key not in obj else f"{id_key!r} is null")
    if not isinstance(doc_id, str):
        return Invalid(record, "id_not_string", f"{id_key!r} is {type(doc_id).__name__}")
    text = obj.get(text_key)
    if text is None:
        return Invalid(record, "missing_text", f"no {text_key!r} field" if text_key not in obj else f"{text_key!r} is null",
                       doc_id)
    if not isinstance(text, str):
        return Invalid(record, "text_not_string", f"{text_key!r} is {type(text).__name__}", doc_id)
    if not text or text.isspace():  # as `not text.strip()`, without copying the text
        return Invalid(record, "empty_text", f"{text_key!r} is empty or whitespace", doc_id)
    # UTF-8 size is at most 4 bytes per character, so encode only when it could exceed the limit.
    # (orjson never yields lone surrogates, so encoding cannot fail.)
    if len(text) * 4 > max_text_bytes and (size := len(text.encode("utf-8"))) > max_text_bytes:
        return Invalid(record, "text_too_large", f"{size} bytes > {max_text_bytes}", doc_id)
    return Document(record, doc_id, text, obj)
