"""The process's exit codes, every way ``selectd`` ends (the README and ``selectd run --help`` list them)."""

#: stopped by SIGTERM / SIGINT: the in-flight batch delivered and committed (or still connecting: nothing read)
OK = 0
#: an unexpected error: a bug, or a failure no retry can fix; logged with its traceback (one JSON line)
ERROR = 1
#: the config is invalid, a model cannot be loaded, the command line or an input file is wrong
CONFIG = 2
#: SIGTERM / SIGINT, and the in-flight batch did not finish within ``delivery.drain_timeout_s``: it was
#: abandoned uncommitted (read again by the partition's next owner; nothing is lost)
DRAIN_TIMEOUT = 3
#: a second SIGTERM / SIGINT while draining: exit at once, the in-flight batch uncommitted
SECOND_SIGNAL = 130

DESCRIPTIONS = {
    OK: "stopped by SIGTERM/SIGINT after delivering and committing the in-flight batch",
    ERROR: "unexpected error (logged with its traceback)",
    CONFIG: "invalid config, a model that cannot be loaded, a wrong command line or input file",
    DRAIN_TIMEOUT: "the in-flight batch did not drain within delivery.drain_timeout_s (left uncommitted, not lost)",
    SECOND_SIGNAL: "a second SIGTERM/SIGINT while draining: exited at once, batch uncommitted",
}


def help_text() -> str:
    """The exit-code table for ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in DESCRIPTIONS.items())
