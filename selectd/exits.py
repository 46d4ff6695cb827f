"""The process's exit codes, every way ``selectd`` ends (the README and ``selectd run --help`` list them)."""

#: stopped by SIGTERM / SIGINT: the in-flight batch delivered and committed (or still connecting: nothing read)
OK = 0
#: an unexpected error: a bug, or a failure no retry can fix, logged with its traceback (one JSON
#: line); or the dedup store failing under ``selectd score``, which has no commit loop to retry a batch
ERROR = 1
#: the config is invalid, a model or the dedup store cannot be opened, the command line or an input file is wrong
CONFIG = 2
#: SIGTERM / SIGINT, and the in-flight batch did not finish within ``delivery.drain_timeout_s``: it was
#: abandoned uncommitted (read again by the partition's next owner; nothing is lost)
DRAIN_TIMEOUT = 3
#: a second SIGTERM / SIGINT while draining: exit at once, the in-flight batch uncommitted
SECOND_SIGNAL = 130

DESCRIPTIONS = {
    OK: "stopped by SIGTERM/SIGINT after delivering and committing the in-flight batch",
    ERROR: "unexpected error (logged with its traceback); score: the dedup store failed",
    CONFIG: "invalid config, a model or dedup store that cannot be opened, a wrong command line or input file",
    DRAIN_TIMEOUT: "the in-flight batch did not drain within delivery.drain_timeout_s (left uncommitted, not lost)",
    SECOND_SIGNAL: "a second SIGTERM/SIGINT while draining: exited at once, batch uncommitted",
}


def help_text() -> str:
    """The exit-code table for ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in DESCRIPTIONS.items())
