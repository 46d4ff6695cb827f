"""Rule scorers on crafted edge cases: each case hits one datatrove rule, and datatrove agrees."""
import numpy as np
import pytest
from pydantic import ValidationError

from selectd.thresholds import Rule, first_failures
from selectd.scorers import scorer_class, scorer_kinds

from datatrove.pipeline import filters  # test extra: missing means a broken install, not a skip
from datatrove.data import Document  # noqa: E402

REFERENCE = {
    "gopher_quality": filters.GopherQualityFilter,
    "gopher_repetition": filters.GopherRepetitionFilter,
    "c4_quality": filters.C4QualityFilter,
    "fineweb_quality": filters.FineWebQualityFilter,
}

PROSE = (
    "The committee met on Tuesday to review the budget for the coming year. Members agreed that the "
    "library should have longer opening hours, and that funding for the reading programme would be "
    "increased. A vote on the new roof was postponed until the surveyors report back to the board.\n"
    "Residents who wish to comment can write to the town hall before the end of the month. The minutes "
    "of the meeting will be published online, together with the figures presented by the treasurer.\n"
    "Several speakers thanked the volunteers. They said the summer festival had been the best attended "
    "in a decade, with visitors coming from across the region to see the parade and the fireworks.\n"
)


def verdicts(kind, texts, **options):
    cls = scorer_class(kind)
    scorer = cls(kind, cls.Options(**options))
    rules = [Rule(**r) for r in scorer.default_rules()]
    ours = first_failures(rules, scorer.run(texts), len(texts))
    reference = []
    for text in texts:
        verdict = REFERENCE[kind](**options).filter(Document(text=text, id="x"))
        reference.append(None if verdict is True else verdict[1])
    return ours, reference


def long_words_text():
    return " ".join(["extraordinarily"] * 40 + ["the", "of", "and"] * 5) + "."


CASES = {
    "gopher_quality": [
        (PROSE, None),
        ("The cat and the dog sat with me.", "gopher_short_doc"),
        (long_words_text(), "gopher_above_avg_threshold"),
        (" ".join(["a", "of", "to", "be", "it", "is"] * 15), "gopher_below_avg_threshold"),
        (PROSE + " ".join(["#tag"] * 40), "gopher_too_many_hashes"),
        (PROSE + " ".join(["wait..."] * 40), "gopher_too_many_ellipsis"),
        ("\n".join(["- the item of the list and more words here"] * 30), "gopher_too_many_bullets"),
        (PROSE + "\n".join(["and then the story went on..."] * 6), "gopher_too_many_end_ellipsis"),
        (PROSE + " ".join(["123", "4.5", "%", "678"] * 40), "gopher_below_alpha_threshold"),
        (" ".join(["Lovely weather today my friend we enjoy sunny days"] * 8), "gopher_enough_stop_words"),
    ],
    "gopher_repetition": [
        (PROSE, None),
        ("\n\n".join(["Same paragraph here."] * 4 + ["Different one.", "Another."]), "dup_para_frac"),
        ("Intro.\n\n" + "\n\n".join(["A much longer repeated paragraph with plenty of characters in it."] * 2)
         + "\n\nOther text one.\n\nOther text two.\n\nOther text three.\n\nOther four.", "dup_para_char_frac"),
        ("\n".join(["line one", "line two", "line one", "line one", "line two", "line three"]), "dup_line_frac"),
        (PROSE + "\n".join(f"Unique line number {i}." for i in range(6)) + "\n"
         + "\n".join(["This long line is repeated to build character weight. " * 9] * 2), "dup_line_char_frac"),
        (" ".join(["buy now"] * 30) + " " + PROSE.replace("\n", " "), "top_2_gram"),
        (PROSE.replace("\n", " ") + " " + " ".join(f"w{i} alpha beta gamma" for i in range(20)), "top_3_gram"),
        (PROSE.replace("\n", " ") * 2, "duplicated_5_n_grams"),
    ],
    "c4_quality": [
        (PROSE, None),
        (PROSE + "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n", "lorem_ipsum"),
        (PROSE + "The function returns {a dictionary} of values.\n", "curly_bracket"),
        ("One line. Two sentences here.\nAnd a third one here.", "too_few_sentences"),
        ("Please enable JavaScript to view this site. It is required. Really it is.\n" * 2
         + "This site uses cookies. We use cookies to track you. Please accept them.\n", "too_few_sentences"),
        ("A line with a citation at the end [1]\nAnother one with a note [citation needed]\n"
         "Short. Lines. Here. And. More. Text.", None),
        ("Bad {bracket} first. Then more words here.\nLorem ipsum dolor sit amet, and more.", "curly_bracket"),
        ("no terminal punctuation on this line\nnor on this one\nnor here either", "too_few_sentences"),
    ],
    "fineweb_quality": [
        (PROSE, None),
        ("\n\n   \n", "empty"),
        ("\n".join(["a line without punctuation at the end"] * 3 + ["Different text without any stop"] * 20),
         "line_punct_ratio"),
        ("\n".join(["Short line."] * 2 + [f"Item {i}." for i in range(20)] + [PROSE]), "short_line_ratio"),
        (PROSE + PROSE.splitlines()[0] + "\n", "char_dup_ratio"),
        ("\n".join(f"Word {i}." for i in range(40)) + "\n" + "\n".join(["A much longer line of text so that the "
         "short line rule does not trigger first, really."] * 1), "short_line_ratio"),
        ("\n".join(f"Supercalifragilistic{i} antidisestablishmentarianism." for i in range(30)), "list_ratio"),
    ],
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_rule_fires_as_in_datatrove(kind):
    texts = [text for text, _ in CASES[kind]]
    expected = [reason for _, reason in CASES[kind]]
    ours, reference = verdicts(kind, texts)
    assert reference == expected, "the crafted case does not exercise the intended datatrove rule"
    assert ours == expected


def test_all_four_kinds_are_registered():
    assert {"gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"} <= set(scorer_kinds())


def test_signals_are_float_arrays_one_per_document():
    for kind in CASES:
        cls = scorer_class(kind)
        signals = cls(kind, cls.Options()).run([PROSE, "short text."])
        assert signals and all(values.shape == (2,) and values.dtype.kind == "f" for values in signals.values())


def test_options_mirror_datatrove_arguments():
    cls = scorer_class("gopher_quality")
    rules = cls("q", cls.Options(min_doc_words=10, max_avg_word_length=None)).default_rules()
    short = next(r for r in rules if r["reason"] == "gopher_short_doc")
    assert short["min"] == 10
    assert not any(r["reason"] == "gopher_above_avg_threshold" for r in rules)
    ours, reference = verdicts("gopher_quality", ["The committee and the council met with members of the public."],
                               min_doc_words=10, min_stop_words=3)
    assert ours == reference == [None]
    ours, reference = verdicts("gopher_repetition", [PROSE.replace("\n", " ") * 2],
                               dup_n_grams=((5, 0.9), (10, 0.3)))
    assert ours == reference == ["duplicated_10_n_grams"]
    ours, reference = verdicts("c4_quality", ["One line. Two sentences here."], min_num_sentences=2)
    assert ours == reference == [None]


def test_bad_options_are_rejected_with_a_reason():
    cls = scorer_class("c4_quality")
    with pytest.raises(ValidationError, match="extra"):
        cls.Options(split_paragraphs=False)
    with pytest.raises(ValidationError, match="English"):
        cls.Options(language="fra")
    with pytest.raises(ValidationError, match="at least 1"):
        scorer_class("gopher_repetition").Options(top_n_grams=[(0, 0.2)])


def _repetition_candidates(rng, n_docs=40):
    """Candidate n-grams as _ngram_repetition passes them: few distinct keys, so repeats (and
    jumps over overlapping repeats) are common."""
    positions, keys, chars, docs = [], [], [], []
    for doc in sorted(rng.choice(n_docs + 10, size=n_docs, replace=False)):
        if doc >= n_docs:
            continue
        doc_positions = np.sort(rng.choice(400, size=int(rng.integers(1, 120)), replace=False))
        positions += doc_positions.tolist()
        keys += rng.integers(0, 6, size=len(doc_positions)).tolist()
        chars += rng.integers(1, 30, size=len(doc_positions)).tolist()
        docs += [doc] * len(doc_positions)
    return (np.asarray(positions, dtype=np.int64), np.asarray(keys, dtype=np.uint64) * np.uint64(2**61 + 1),
            np.asarray(chars, dtype=np.int64), np.asarray(docs, dtype=np.int64), n_docs)


def _datatrove_scan(sequence, n):
    """datatrove's find_all_duplicate over a key sequence (every position, not only candidates)."""
    seen, total, index = set(), 0, 0
    while index < len(sequence) - n + 1:
        gram = tuple(sequence[index:index + n])
        if gram in seen:
            total += n
            index += n
        else:
            seen.add(gram)
            index += 1
    return total


@pytest.mark.parametrize("n", [1, 3, 7])
def test_repetition_scan_compiled_equals_python(n):
    from selectd.scorers.heuristics.gopher import greedy_repeated_chars

    rng = np.random.default_rng(n)
    for _ in range(20):
        positions, keys, chars, docs, n_docs = _repetition_candidates(rng)
        python = greedy_repeated_chars(n, positions, keys, chars, docs, n_docs, implementation="python")
        compiled = greedy_repeated_chars(n, positions, keys, chars, docs, n_docs, implementation="compiled")
        np.testing.assert_array_equal(compiled, python)
        assert python.any()  # the generated candidates do repeat


def test_key_counts_compiled_equals_numpy():
    from selectd.scorers.heuristics.gopher import key_counts

    rng = np.random.default_rng(0)
    extremes = np.array([0, 2**64 - 1, 2**63, 0, 2**64 - 1], dtype=np.uint64)
    for size, distinct in [(0, 1), (1, 1), (50, 3), (5000, 40), (20000, 20000)]:
        keys = rng.integers(0, distinct, size=size).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        keys = np.concatenate([keys, extremes]) if size else keys
        compiled, python = key_counts(keys, "compiled"), key_counts(keys, "python")
        assert compiled.dtype == python.dtype == np.int64
        np.testing.assert_array_equal(compiled, python)
    with pytest.raises(ValueError, match="unknown implementation"):
        key_counts(keys, "fortran")


def test_repetition_scan_equals_datatrove_on_token_sequences():
    """The candidate-only scan (either implementation) gives datatrove's totals on whole sequences."""
    from selectd.scorers.heuristics.gopher import greedy_repeated_chars

    rng = np.random.default_rng(0)
    n = 3
    for implementation in ("python", "compiled"):
        for _ in range(30):
            sequence = rng.integers(0, 3, size=int(rng.integers(0, 60))).tolist()
            grams = [tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1)]
            counts = {gram: grams.count(gram) for gram in grams}
            candidates = [i for i, gram in enumerate(grams) if counts[gram] > 1]
            ids = {gram: index for index, gram in enumerate(counts)}
            totals = greedy_repeated_chars(
                n, np.asarray(candidates, dtype=np.int64),
                np.asarray([ids[grams[i]] for i in candidates], dtype=np.uint64),
                np.full(len(candidates), n, dtype=np.int64), np.zeros(len(candidates), dtype=np.int64), 1,
                implementation=implementation)
            assert totals[0] == _datatrove_scan(sequence, n)


def test_repetition_scan_rejects_mismatched_arrays():
    from selectd.scorers.heuristics.gopher import greedy_repeated_chars

    with pytest.raises(ValueError, match="keys"):
        greedy_repeated_chars(2, np.arange(3), np.arange(2, dtype=np.uint64), np.ones(3), np.zeros(3), 1,
                              implementation="compiled")


def test_paragraph_and_line_splits_equal_datatrove_regexes():
    import random
    import re

    from selectd.scorers.heuristics.gopher import _lines, _paragraphs

    rng = random.Random(0)
    samples = ["", "\n", "a", "a\n", "\na", "a\n\n\n\nb", "a\n\n\n\n\nb\n\n", " \n\n \n"]
    samples += ["".join(rng.choice("ab\n \t") for _ in range(rng.randint(0, 24))) for _ in range(20_000)]
    for text in samples:
        assert _paragraphs(text) == re.split(r"\n{2,}", text.strip()), repr(text)
        assert _lines(text) == re.split("\n+", text), repr(text)


def test_line_shapes_compiled_equal_python():
    """Gopher quality's bullet / ellipsis / line counts: _gopher.line_shapes cuts lines as
    str.splitlines() does (every line boundary, \\r\\n as one) and strips str.strip()'s whitespace,
    in str objects of every kind (1-, 2- and 4-byte code units)."""
    import random

    from selectd.scorers.heuristics.gopher import line_shapes

    pieces = ["a", "b.", "...", "…", "-", "•", "- x", ".", " ", "\t", "\u3000", "\u00a0", "\n", "\r", "\r\n", "\v",
              "\f", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029", "é", "😀", "–", "‒"]
    rng = random.Random(0)
    texts = ["", "\n", "- a\n• b\nc...\nd…  \n  ...\n..", "\r\n\r\n", "...\r\n-"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(20_000)]
    compiled = line_shapes(texts, implementation="compiled")
    python = line_shapes(texts, implementation="python")
    for ours, reference in zip(compiled, python):
        assert ours.tolist() == reference.tolist()
    assert [int(values[2]) for values in zip(*python)] == [len(text.splitlines()) for text in texts]
    assert python[0].sum() > 1000 and python[1].sum() > 1000
