"""Offline tools behind ``selectd export|verify|bench`` and the model build scripts: never imported by the daemon."""
