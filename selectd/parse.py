"""Parse and validate raw input records; anything unusable becomes an :class:`Invalid` with a reason
(the router dead-letters it).

Runs before any scorer: a message that is not a JSON object with a string ``id`` and a non-empty
string ``text`` (valid UTF-8, within the byte limits) never reaches the cascade.
"""
from __future__ import annotations

import orjson

from selectd.records import Document, Invalid, Record


def parse_record(record: Record, max_message_bytes: int, max_text_bytes: int) -> Document | Invalid:
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
    doc_id = obj.get("id")
    if doc_id is None:
        return Invalid(record, "missing_id", "no 'id' field" if "id" not in obj else "'id' is null")
    if not isinstance(doc_id, str):
        return Invalid(record, "id_not_string", f"'id' is {type(doc_id).__name__}")
    text = obj.get("text")
    if text is None:
        return Invalid(record, "missing_text", "no 'text' field" if "text" not in obj else "'text' is null")
    if not isinstance(text, str):
        return Invalid(record, "text_not_string", f"'text' is {type(text).__name__}")
    if not text or text.isspace():  # as `not text.strip()`, without copying the text
        return Invalid(record, "empty_text", "'text' is empty or whitespace")
    # UTF-8 size is at most 4 bytes per character, so encode only when it could exceed the limit.
    # (orjson never yields lone surrogates, so encoding cannot fail.)
    if len(text) * 4 > max_text_bytes and (size := len(text.encode("utf-8"))) > max_text_bytes:
        return Invalid(record, "text_too_large", f"{size} bytes > {max_text_bytes}")
    return Document(record, doc_id, text, obj)
