"""``selectd`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from pathlib import Path

from selectd import __version__, exits


def _add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", "-c", required=required, type=Path, help="TOML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config key, e.g. kafka.group_id=x, stages[0].enabled=false (also "
                             "stages.0.enabled); the value is read as TOML, else as a string; repeatable")


def _load(args):
    from selectd.config import load_config

    return load_config(args.config, args.overrides)


def cmd_run(args) -> int:
    from selectd.app import run_daemon
    from selectd.logs import setup_logging

    config = _load(args)
    setup_logging(config.logging.level, config.logging.format)
    return run_daemon(config, reload_config=lambda: _load(args))


def cmd_score(args) -> int:
    from selectd.app import score_file
    from selectd.logs import setup_logging
    from selectd.sources.jsonl import InputError

    # --id-key / --text-key are [input] keys given on the command line (so they count in the config digest)
    args.overrides += [f"input.{key}={json.dumps(value)}" for key, value in
                       (("id_key", args.id_key), ("text_key", args.text_key)) if value is not None]
    config = _load(args)
    setup_logging(config.logging.level, config.logging.format)
    try:
        summary = score_file(config, args.input, args.output, args.attributes, args.batch_size, args.profile)
    except InputError as exc:
        print(f"selectd score: {exc}", file=sys.stderr)
        return exits.CONFIG
    for line in summary.lines():
        print(line, file=sys.stderr)
    return exits.OK


def cmd_compare(args) -> int:
    import orjson

    from selectd.compare import compare_files, table_lines
    from selectd.config import load_config

    if not args.input.is_file():
        print(f"selectd compare: {args.input}: no such file", file=sys.stderr)
        return 2
    live, candidate = load_config(args.config), load_config(args.candidate)
    result = compare_files(live, candidate, args.input, args.batch_size, (str(args.config), str(args.candidate)))
    if args.output:
        args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print("\n".join(table_lines(result, args.show)))
    return 0


def cmd_check_config(args) -> int:
    if args.list_scorers:
        print("\n".join(_scorer_listing()))
        return exits.OK
    if args.file is not None and args.config is not None and args.file != args.config:
        print("selectd check-config: give the config once (FILE or --config)", file=sys.stderr)
        return exits.CONFIG
    args.config = args.config or args.file
    if args.config is None:
        print("selectd check-config: a config is required (--config FILE)", file=sys.stderr)
        return exits.CONFIG
    from selectd.app import check

    config = _load(args)
    warnings = check(config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    stages = ", ".join(f"{s.name} ({s.type})" for s in config.stages if s.enabled) or "none"
    print(f"{args.config}: ok (digest {config.digest}); stages: {stages}; routes: {len(config.routes)}; "
          f"models loaded and every rule, selection and route checked against the signals the stages emit"
          + (f"; {len(warnings)} warning(s)" if warnings else ""))
    return exits.OK


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(annotation))
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _scorer_listing() -> list[str]:
    """Every scorer type: its signals, then its options with their types, defaults and descriptions."""
    from pydantic_core import PydanticUndefined

    from selectd.scorers.base import scorer_class, scorer_kinds

    lines = []
    for kind in scorer_kinds():
        scorer = scorer_class(kind)
        lines += [kind, f"  signals: {scorer.signals_help()}", "  options:" if scorer.Options.model_fields else "  options: none"]
        for name, field in scorer.Options.model_fields.items():
            if field.default_factory is not None:
                default = f" = {field.default_factory()!r}"
            else:
                default = " (required)" if field.default is PydanticUndefined else f" = {field.default!r}"
            lines.append(f"    {name}: {_type_name(field.annotation)}{default}" + (f"  -- {field.description}" if field.description else ""))
    return lines


def cmd_version(_args) -> int:
    import kafka
    import onnxruntime

    try:
        import confluent_kafka
        confluent = f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
    except ImportError:
        confluent = "confluent-kafka not installed"
    print(f"selectd {__version__} (kafka-python {kafka.__version__}, {confluent}, onnxruntime {onnxruntime.__version__}, "
          f"providers {','.join(onnxruntime.get_available_providers())})")
    return 0


def cmd_status(args) -> int:
    from selectd.status import status

    try:
        lines = status(args.metrics_url, args.interval)
    except OSError as exc:
        print(f"selectd status: cannot scrape {args.metrics_url}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def cmd_demo(args) -> int:
    from selectd.demo.embedded import run_embedded

    return run_embedded(docs=args.docs, partitions=args.partitions, keep=args.keep_running, workdir=args.workdir)


def cmd_export(args) -> int:
    from selectd.tools.families import run_family_command

    return run_family_command("export", args.rest)


def cmd_verify(args) -> int:
    from selectd.tools.families import run_verify

    return run_verify(args.model_dir, args.rest)


def cmd_bench(args) -> int:
    from selectd.tools.families import run_family_command

    return run_family_command("bench", args.rest)


def _add_tool_command(sub, name: str, help: str, func) -> None:
    """A command whose arguments ``selectd.tools`` parses: everything after ``name``, options and
    --help included, lands untouched in ``args.rest``. Declaring no option prefix (a NUL, which
    no argument can contain) keeps argparse from reading any of them as this parser's options; the
    family parsers are built only when the command runs, so other commands never import the tools."""
    p = sub.add_parser(name, help=help, add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selectd", description="Streaming data selection for LLM pretraining data.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon (Kafka in, Kafka out)", epilog=exits.help_text(),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Loads the models, then connects (an unreachable broker is retried with "
                                   "backoff, not ready meanwhile) and runs until SIGTERM/SIGINT.")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="the same pipeline over a JSONL file, no Kafka",
                       epilog=exits.help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("input", help="input JSONL, one message value per line; .gz / .zst (zstandard) read as such; - is stdin")
    p.add_argument("-o", "--output", required=True, help="output JSONL, one line per input line; - is stdout")
    p.add_argument("--attributes", type=Path, help="also write Dolma-style attribute records here (whether or "
                                                   "not the config sets topics.attributes)")
    p.add_argument("--id-key", help="field of the document id (default: input.id_key, \"id\")")
    p.add_argument("--text-key", help="field of the document text (default: input.text_key, \"text\")")
    p.add_argument("--batch-size", type=int, help="documents per batch (default: batch.max_docs)")
    p.add_argument("--profile", type=Path, metavar="OUT.json",
                   help="also write the score distributions, a drift reference for [drift] reference")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("compare", help="the decisions of a candidate config against the live one, over a JSONL file")
    p.add_argument("--config", "-c", required=True, type=Path, help="the live config")
    p.add_argument("--candidate", required=True, type=Path, help="the candidate config")
    p.add_argument("input", type=Path, help="input JSONL (one message value per line)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    p.add_argument("-o", "--output", type=Path, help="also write the comparison as JSON here")
    p.add_argument("--show", type=int, default=20, help="documents that change side listed in the table (default 20)")
    p.add_argument("--batch-size", type=int, help="documents per batch (default: the live config's batch.max_docs)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("check-config", help="build everything run builds short of connecting; errors name the "
                                            "key path", epilog=exits.help_text(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, nargs="?", help="the config (or --config FILE)")
    _add_config_args(p, required=False)
    p.add_argument("--list-scorers", action="store_true", help="list scorer types: their signals and options")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("version", help="print versions")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("status", help="summarise a running daemon from its metrics")
    p.add_argument("--metrics-url", required=True, help="e.g. http://127.0.0.1:9108/metrics")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the two scrapes used for rates")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="embedded default: local broker, sample corpus, daemon, summary")
    p.add_argument("--docs", type=int, default=5000, help="sample documents to stream")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("artifacts/demo"), help="corpus and models are built here")
    p.add_argument("--keep-running", action="store_true", help="keep the daemon up after the corpus is done (Ctrl-C stops)")
    p.set_defaults(func=cmd_demo)

    _add_tool_command(sub, "export", "convert a model to ONNX + manifest", cmd_export)

    p = sub.add_parser("verify", help="compare an exported model with its reference")
    p.add_argument("model_dir", type=Path)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="family options, e.g. --against MODEL --texts FILE.jsonl")
    p.set_defaults(func=cmd_verify)

    _add_tool_command(sub, "bench", "docs/s of ours vs the reference, same texts, same run", cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The process: a command's exit code (:mod:`selectd.exits`)."""
    args = build_parser().parse_args(argv)  # a wrong command line exits 2 here
    from selectd.config import ConfigError
    from selectd.dedup.store import StoreError, StoreOpenError
    from selectd.models.manifest import ModelLoadError

    try:
        return args.func(args)
    except ConfigError as exc:
        print("selectd: invalid config\n  " + str(exc).replace("\n", "\n  "), file=sys.stderr)
        return exits.CONFIG
    except ModelLoadError as exc:
        print(f"selectd: cannot load model: {exc}", file=sys.stderr)
        return exits.CONFIG
    except StoreOpenError as exc:
        print(f"selectd: {exc}", file=sys.stderr)  # names the [dedup] key and what failed
        return exits.CONFIG
    except StoreError as exc:  # `score` has no commit loop to retry a batch: the run stops, its output incomplete
        print(f"selectd: the dedup store failed: {exc}", file=sys.stderr)
        return exits.ERROR
    except Exception:  # a bug, or a failure no retry fixes: one log line (JSON once logging is set up)
        logging.getLogger("selectd").critical("unexpected error; exiting", exc_info=True,
                                              extra={"exit_code": exits.ERROR})
        return exits.ERROR


if __name__ == "__main__":
    sys.exit(main())
