"""Streaming deduplication: exact and MinHash near-duplicate keys, and the stores that remember them.

keys.py derives a document's keys (normalized text / fields, or MinHash bands identical to
datatrove's); a store (store.py: the interface; local.py: embedded and exact, bloom.py: embedded and
bounded, redis_store.py: a Redis server shared by replicas) claims them per batch and reports, per document, the
earlier document it duplicates; stage.py joins the two and holds the ``[dedup]`` store config and the
process's open stores. The cascade stage kinds built on it are in selectd/scorers/dedup.py.
"""
