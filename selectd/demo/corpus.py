"""Build the bundled sample corpus from text that already exists on this machine.

No download and no model: the documents are cut from real prose installed locally, so the corpus
can be rebuilt offline on any machine that has Python and the package's runtime dependencies.

Real documents (``kind = "real"``) come from:

- ``package-metadata``: the long descriptions (READMEs) in the ``METADATA`` of selectd's runtime
  dependencies (the distributions ``pip install selectd`` brings, found wherever selectd is
  installed: the demo, the tests and an image read the same ones, whatever extras are installed);
- ``package-docs``: ``.md`` / ``.rst`` / ``.txt`` files shipped inside those distributions;
- ``python-docs``: docstrings of the Python standard library, one text per module (read with
  :mod:`ast`, nothing is imported);
- ``system-docs``: ``/usr/share/doc`` READMEs, changelogs and copyright notices;
- ``translations``: gettext catalogues (``*.mo`` under ``/usr/share/locale`` and friends, and in
  those distributions), the translated messages of each language assembled into paragraphs: the
  non-English part.

A minority of synthetic low-quality documents (``kind = "synthetic-<type>"``: cookie banners,
repeated lines, keyword spam, very short pages, lorem ipsum, code / JSON dumps, bullet lists) is
mixed in so that quality filters have something to reject.

The output is deterministic for a given machine and seed: every file list is sorted and all
randomness comes from one seeded :class:`random.Random`, and installing other packages beside
selectd (an extra, a test tool) changes nothing. Another machine with other system files or other
versions of selectd's dependencies yields a different (equally built) corpus.
"""
from __future__ import annotations

import argparse
import ast
import gettext
import gzip
import json
import random
import re
import sys
import sysconfig
from importlib import metadata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: share of each real source among the real documents (renormalised over the sources that exist)
SOURCE_WEIGHTS: dict[str, float] = {
    "translations": 0.30,
    "python-docs": 0.22,
    "package-metadata": 0.16,
    "package-docs": 0.16,
    "system-docs": 0.16,
}
#: share of real documents whose prose paragraphs are unwrapped to one line, like extracted web text
UNWRAPPED_SHARE = 0.7
#: share of synthetic low-quality documents in the corpus
SYNTHETIC_SHARE = 0.12
#: how many non-English languages the translations source covers (those with the most text)
TRANSLATION_LANGUAGES = 14
#: text files larger than this are read only up to it (a document is a few KB anyway)
MAX_FILE_CHARS = 400_000
#: median and bounds of a document's target length in characters
MEDIAN_DOC_CHARS = 2600
MIN_DOC_CHARS, MAX_DOC_CHARS = 300, 16_000

_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Piece:
    """A stretch of real text from one file, before it is cut into documents."""

    source: str
    lang: str
    origin: str  # file (or module) it came from, for ordering and debugging
    text: str


# --- reading local text ---------------------------------------------------------------------------

def runtime_distributions() -> list[metadata.Distribution]:
    """The distributions ``pip install selectd`` brings (its dependencies, theirs and so on, without
    extras), sorted by name; none when selectd itself is not installed."""
    try:
        wanted = [requirement for requirement in metadata.requires("selectd") or [] if "extra ==" not in requirement]
    except metadata.PackageNotFoundError:
        return []
    found: dict[str, metadata.Distribution] = {}
    while wanted:
        requirement = Requirement(wanted.pop())
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        wanted += found[name].requires or []
    return [found[name] for name in sorted(found)]


def _runtime_files(*suffixes: str) -> list[Path]:
    """Files with these suffixes that selectd's runtime dependencies installed (outside their metadata)."""
    return [Path(dist.locate_file(file)) for dist in runtime_distributions() for file in dist.files or []
            if file.suffix in suffixes and not file.parts[0].endswith(".dist-info")
            and Path(dist.locate_file(file)).is_file()]


def _read_text(path: Path) -> str | None:
    try:
        raw = path.read_bytes()[: MAX_FILE_CHARS * 2]
        if path.suffix == ".gz":
            raw = gzip.decompress(raw) if len(raw) < MAX_FILE_CHARS * 2 else b""
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\x00" in raw:
        return None  # binary
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text[:MAX_FILE_CHARS].replace("\r\n", "\n")


def _shuffled(paths: list[Path], rng: random.Random) -> list[Path]:
    """Sorted then shuffled: reading may stop early, and should not stop at the letter m."""
    paths = sorted(paths)
    rng.shuffle(paths)
    return paths


def _package_metadata(rng: random.Random) -> Iterator[Piece]:
    distributions = runtime_distributions()
    rng.shuffle(distributions)
    for dist in distributions:
        text = dist.read_text("METADATA")
        if not text:
            continue
        # RFC 822 headers, a blank line, then the long description
        _, _, body = text.replace("\r\n", "\n")[:MAX_FILE_CHARS].partition("\n\n")
        yield Piece("package-metadata", "en", f"{dist.metadata['Name']}/METADATA", body)


def _package_docs(rng: random.Random) -> Iterator[Piece]:
    for path in _shuffled(_runtime_files(".md", ".rst", ".txt"), rng):
        text = _read_text(path)
        if text:
            yield Piece("package-docs", "en", str(path), text)


def _stdlib_module_text(path: Path, module: str) -> str | None:
    """A module's docstrings as one text: the module's, then each class's and function's."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return None
    parts = []
    module_doc = ast.get_docstring(tree)
    if module_doc:
        parts.append(f"{module}\n\n{module_doc}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80 and not node.name.startswith("_"):
                parts.append(f"{node.name}\n{doc}")
    return "\n\n".join(parts) if parts else None


def _python_docs(rng: random.Random) -> Iterator[Piece]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skipped = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    for path in _shuffled(list(stdlib.rglob("*.py")), rng):
        relative = path.relative_to(stdlib)
        if skipped.intersection(relative.parts):
            continue
        module = ".".join(relative.with_suffix("").parts)
        text = _stdlib_module_text(path, module)
        if text:
            yield Piece("python-docs", "en", module, text)


def _system_docs(rng: random.Random) -> Iterator[Piece]:
    root = Path("/usr/share/doc")
    if not root.is_dir():
        return
    wanted = re.compile(r"(readme|changelog|news|copyright|faq|todo|authors)|\.(txt|md|rst)(\.gz)?$", re.I)
    for path in _shuffled(list(root.rglob("*")), rng):
        if path.is_file() and not path.is_symlink() and wanted.search(path.name):
            text = _read_text(path)
            if text:
                yield Piece("system-docs", "en", str(path), text)


def _catalogues() -> list[Path]:
    """The system's gettext catalogues, and those of selectd's runtime dependencies."""
    roots = [Path("/usr/share/locale"), Path("/usr/local/share/locale"), Path(sys.prefix) / "share" / "locale"]
    roots += sorted(Path("/usr/share").glob("vim/vim*/lang"))
    return [path for root in roots if root.is_dir() for path in root.rglob("*.mo")] + _runtime_files(".mo")


def _language_of(mo_path: Path) -> str | None:
    """Base language code of a catalogue from the directory above LC_MESSAGES (``pt_BR`` -> ``pt``)."""
    if mo_path.parent.name != "LC_MESSAGES":
        return None
    code = re.split(r"[_@.]", mo_path.parent.parent.name)[0].lower()
    if not re.fullmatch(r"[a-z]{2,3}", code) or code == "en":
        return None
    return code


def _catalogue_messages(path: Path) -> list[str]:
    """Translated messages of one .mo file that read like prose (skip labels and format strings)."""
    try:
        with open(path, "rb") as handle:
            catalogue = gettext.GNUTranslations(handle)._catalog  # the parsed msgid -> msgstr table
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return []
    messages = []
    for msgid, msgstr in catalogue.items():
        if not msgid or not isinstance(msgstr, str):
            continue  # header entry or plural key
        text = " ".join(msgstr.split())
        if len(text) >= 25 and text.count("%") <= 2 and text.count("--") <= 1:
            messages.append(text)
    return sorted(messages)


def _translations(rng: random.Random) -> Iterator[Piece]:
    files_by_language: dict[str, list[Path]] = {}
    for path in _catalogues():
        language = _language_of(path)
        if language:
            files_by_language.setdefault(language, []).append(path)
    # the languages with the most translated text, by file size (parsing every catalogue is slow)
    sizes = {lang: sum(p.stat().st_size for p in paths) for lang, paths in files_by_language.items()}
    languages = sorted(sizes, key=lambda lang: (-sizes[lang], lang))[:TRANSLATION_LANGUAGES]
    for language in sorted(languages):
        for path in sorted(files_by_language[language]):
            messages = _catalogue_messages(path)
            if len(messages) < 4:
                continue
            # consecutive messages of one program become paragraphs of 2-5 sentences
            paragraphs, start = [], 0
            while start < len(messages):
                take = rng.randint(2, 5)
                paragraphs.append(" ".join(messages[start:start + take]))
                start += take
            yield Piece("translations", language, str(path), "\n\n".join(paragraphs))


SOURCES: dict[str, Callable[[random.Random], Iterator[Piece]]] = {
    "translations": _translations,
    "python-docs": _python_docs,
    "package-metadata": _package_metadata,
    "package-docs": _package_docs,
    "system-docs": _system_docs,
}


# --- cutting pieces into documents -----------------------------------------------------------------

def _target_chars(rng: random.Random) -> int:
    return int(min(MAX_DOC_CHARS, max(MIN_DOC_CHARS, rng.lognormvariate(0, 0.8) * MEDIAN_DOC_CHARS)))


def _blocks(text: str) -> Iterator[str]:
    """Paragraphs of ``text``; one longer than a document is split at line ends (or hard-cut)."""
    for paragraph in _BLANK_LINES.split(text):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if len(paragraph) <= MAX_DOC_CHARS:
            yield paragraph
            continue
        chunk: list[str] = []
        size = 0
        for line in paragraph.split("\n"):
            for start in range(0, max(len(line), 1), MAX_DOC_CHARS):
                part = line[start:start + MAX_DOC_CHARS]
                if chunk and size + len(part) > MAX_DOC_CHARS:
                    yield "\n".join(chunk)
                    chunk, size = [], 0
                chunk.append(part)
                size += len(part) + 1
        if chunk:
            yield "\n".join(chunk)


def _cut(piece: Piece, rng: random.Random) -> Iterator[str]:
    """Split a piece at paragraph boundaries into documents of a few KB."""
    document: list[str] = []
    size, target = 0, _target_chars(rng)
    for block in _blocks(piece.text):
        if document and size + len(block) > MAX_DOC_CHARS:
            yield "\n\n".join(document)
            document, size, target = [], 0, _target_chars(rng)
        document.append(block)
        size += len(block) + 2
        if size >= target:
            yield "\n\n".join(document)
            document, size, target = [], 0, _target_chars(rng)
    if document and size >= MIN_DOC_CHARS // 3:
        yield "\n\n".join(document)


_MARKUP_LINE = re.compile(r"\s|[-*•#>|=+`~_]|\d+[.)]\s")


def _unwrap(text: str) -> str:
    """Text as a web page's text extraction gives it: each prose paragraph on one line.

    Files in /usr/share/doc and docstrings are hard-wrapped at ~72 columns; extracted web text
    has one line per paragraph. A paragraph is joined only when none of its lines looks like
    markup or code (indented, a bullet, a heading, a table row, a numbered item).
    """
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.split("\n")
        if len(lines) > 1 and not any(_MARKUP_LINE.match(line) for line in lines):
            paragraph = " ".join(line.strip() for line in lines)
        paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def _pool(source: str, cap: int, rng: random.Random) -> dict[str, list[str]]:
    """Documents cut from one source, by language; reading stops after ``cap`` documents
    (except for translations, where stopping early would drop whole languages)."""
    by_lang: dict[str, list[str]] = {}
    total = 0
    for piece in SOURCES[source](rng):
        for text in _cut(piece, rng):
            by_lang.setdefault(piece.lang, []).append(text)
            total += 1
        if total >= cap and source != "translations":
            break
    return by_lang


def _take(pool: dict[str, list[str]], wanted: int, rng: random.Random) -> list[tuple[str, str]]:
    """``wanted`` (lang, text) documents of a pool, round-robin over languages so each shows up."""
    languages = sorted(pool)
    shuffled = [rng.sample(pool[language], len(pool[language])) for language in languages]
    chosen: list[tuple[str, str]] = []
    depth = 0
    while len(chosen) < wanted and any(depth < len(docs) for docs in shuffled):
        for language, docs in zip(languages, shuffled):
            if depth < len(docs) and len(chosen) < wanted:
                chosen.append((language, docs[depth]))
        depth += 1
    return chosen


def _allocate(total: int, weights: dict[str, float], available: dict[str, int]) -> dict[str, int]:
    """Split ``total`` by ``weights``; a source short of its share gives all it has and the
    others share what it lacks."""
    allocation: dict[str, int] = {}
    open_weights = {name: w for name, w in weights.items() if available[name] > 0}
    need = total
    while open_weights:
        quotas = _quotas(need, open_weights)
        short = [name for name in open_weights if available[name] <= quotas[name]]
        if not short:
            allocation.update(quotas)
            break
        for name in short:
            allocation[name] = available[name]
            need -= available[name]
            del open_weights[name]
    return allocation


# --- synthetic low-quality documents ---------------------------------------------------------------

_COOKIE_LINES = [
    "We use cookies to improve your experience on our website.",
    "By continuing to browse this site you agree to our use of cookies.",
    "Accept all cookies", "Reject non-essential", "Manage preferences", "Privacy Policy",
    "Terms of Use", "Cookie Policy", "Home", "About us", "Contact", "Sign in", "Subscribe",
    "Copyright 2024 All rights reserved.", "Skip to main content", "Please enable JavaScript to view this page.",
]
_SPAM_WORDS = [
    "cheap", "best", "buy", "online", "discount", "free", "shipping", "deal", "price", "sale",
    "hotel", "flights", "casino", "bonus", "loan", "crypto", "top", "review", "2024", "offer",
]
_LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur."
)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.strip()) > 20]


def _cookie_banner(rng: random.Random, real: str) -> str:
    lines = rng.sample(_COOKIE_LINES, rng.randint(6, len(_COOKIE_LINES)))
    if rng.random() < 0.5:
        lines.insert(rng.randint(0, len(lines)), " ".join(_sentences(real)[:2]))
    return "\n".join(lines)


def _repeated_lines(rng: random.Random, real: str) -> str:
    sentences = _sentences(real) or [_LOREM]
    chosen = rng.sample(sentences, min(len(sentences), rng.randint(1, 3)))
    return "\n".join(rng.choice(chosen) for _ in range(rng.randint(15, 60)))


def _keyword_spam(rng: random.Random, real: str) -> str:
    keywords = rng.sample(_SPAM_WORDS, 6)
    lines = [" ".join(rng.choice(keywords) for _ in range(rng.randint(5, 14))) for _ in range(rng.randint(10, 40))]
    return "\n".join(lines)


def _very_short(rng: random.Random, real: str) -> str:
    sentences = _sentences(real) or ["Page not found."]
    return rng.choice(sentences)[: rng.randint(15, 120)]


def _lorem_ipsum(rng: random.Random, real: str) -> str:
    paragraphs = [_LOREM] * rng.randint(2, 8)
    if rng.random() < 0.5:
        paragraphs.insert(1, " ".join(_sentences(real)[:4]))
    return "\n\n".join(paragraphs)


def _code_dump(rng: random.Random, real: str) -> str:
    if rng.random() < 0.5:
        words = re.findall(r"[A-Za-z]{3,12}", real) or _SPAM_WORDS
        records = [
            {"id": rng.randint(1, 10**6), "name": rng.choice(words), "score": round(rng.random(), 4),
             "tags": rng.sample(words, min(3, len(words))), "active": rng.random() < 0.5}
            for _ in range(rng.randint(5, 60))
        ]
        return json.dumps({"status": "ok", "count": len(records), "items": records}, indent=rng.choice([None, 2]))
    names = re.findall(r"[a-z]{3,10}", real) or ["value"]
    body = []
    for _ in range(rng.randint(10, 50)):
        a, b = rng.choice(names), rng.choice(names)
        body.append(rng.choice([
            f"    {a} = {b}.get('{a}', {rng.randint(0, 99)})",
            f"    if {a} is None:\n        return {b}",
            f"    for {a} in {b}:\n        total += len({a})",
            f"    # {a} {b}",
        ]))
    return "def process(" + rng.choice(names) + "):\n    total = 0\n" + "\n".join(body) + "\n    return total\n"


def _bullet_list(rng: random.Random, real: str) -> str:
    items = [s[:80] for s in _sentences(real)] or _SPAM_WORDS
    marker = rng.choice(["- ", "• ", "* "])
    return "\n".join(marker + rng.choice(items) for _ in range(rng.randint(8, 40)))


SYNTHETIC: dict[str, Callable[[random.Random, str], str]] = {
    "cookie-banner": _cookie_banner,
    "repeated-lines": _repeated_lines,
    "keyword-spam": _keyword_spam,
    "very-short": _very_short,
    "lorem-ipsum": _lorem_ipsum,
    "code-dump": _code_dump,
    "bullet-list": _bullet_list,
}


# --- the corpus ------------------------------------------------------------------------------------

def _quotas(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``total`` by ``weights`` into integers that sum to ``total`` (largest remainder)."""
    weight_sum = sum(weights.values())
    exact = {name: total * w / weight_sum for name, w in weights.items()}
    quotas = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (quotas[name] - exact[name], name))
    for name in by_remainder[: total - sum(quotas.values())]:
        quotas[name] += 1
    return quotas


def build_corpus(out_path: Path, n_docs: int = 5000, seed: int = 0) -> dict:
    """Write ``n_docs`` JSONL documents to ``out_path``; return counts by source, kind and language.

    Each line is ``{"id", "text", "source", "lang", "kind"}``. Raises ``RuntimeError`` when the
    machine has too little local text for ``n_docs`` real documents.
    """
    if n_docs < 1:
        raise ValueError(f"n_docs must be at least 1, got {n_docs}")
    rng = random.Random(seed)
    n_synthetic = int(round(n_docs * SYNTHETIC_SHARE)) if n_docs >= 10 else 0
    n_real = n_docs - n_synthetic

    pools = {source: _pool(source, n_real, rng) for source in SOURCE_WEIGHTS}
    available = {source: sum(map(len, pool.values())) for source, pool in pools.items()}
    if sum(available.values()) < n_real:
        raise RuntimeError(
            f"only {sum(available.values())} real documents could be cut from the local text "
            f"sources ({available}); ask for fewer than {n_docs}"
        )
    allocation = _allocate(n_real, SOURCE_WEIGHTS, available)
    real = [
        (source, lang, text)
        for source in SOURCE_WEIGHTS
        for lang, text in _take(pools[source], allocation.get(source, 0), rng)
    ]

    english = [text for source, lang, text in real if lang == "en"] or [text for _, _, text in real]
    kinds = sorted(SYNTHETIC)
    # most real documents read like extracted web text; the rest keep their hard-wrapped lines
    records = [
        {"text": _unwrap(text) if rng.random() < UNWRAPPED_SHARE else text, "source": source, "lang": lang,
         "kind": "real"}
        for source, lang, text in real
    ]
    for index in range(n_synthetic):
        kind = kinds[index % len(kinds)]
        text = SYNTHETIC[kind](rng, rng.choice(english))
        records.append({"text": text, "source": "synthetic", "lang": "en", "kind": f"synthetic-{kind}"})
    rng.shuffle(records)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as handle:
        for index, record in enumerate(records):
            line = {"id": f"sample-{seed}-{index:06d}", **record}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return {
        "documents": len(records),
        "by_source": dict(sorted(Counter(r["source"] for r in records).items())),
        "by_kind": dict(sorted(Counter(r["kind"] for r in records).items())),
        "by_lang": dict(sorted(Counter(r["lang"] for r in records).items())),
        "mean_chars": sum(len(r["text"]) for r in records) / len(records),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selectd.demo.corpus",
        description="Build the sample corpus (JSONL) from text already installed on this machine.",
    )
    parser.add_argument("out", type=Path, help="output JSONL file")
    parser.add_argument("--docs", type=int, default=5000, help="number of documents (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    counts = build_corpus(args.out, args.docs, args.seed)
    print(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
