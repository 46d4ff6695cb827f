"""Our port of datatrove's word split (spaCy's English tokenizer) and sentence count against the real thing."""
import itertools
import random
import string
import sys

import orjson
import pytest

from selectd.scorers.heuristics.c4 import _sentences_per_line
from selectd.text import spacy_tables
from selectd.text.affix_split import EnglishSplitter
from selectd.text.byte_program import UnsupportedPattern, compile_program, compiled_splitter, url_prefilter
from selectd.text.generate_spacy_tables import live_tables
from selectd.text.vocabulary import WordTokenizer

from datatrove.utils import text as datatrove_text  # test extra

TRICKY = [
    "don't can't won't I'm y'all gonna cannot dont Im",
    "(hello) [world] {curly} <angle> «quote» “smart” ‘single’ ''double'' `tick`",
    "U.S. e.g., i.e. etc. Mr. Dr. a.m. p.m. No. St. vs. Inc.",
    "5km 10kg 3.5GB 20% $10 US$5 €3 10°C. 2+2 1-2 3*4 2^8 1,000,000 3.14",
    "co-operate well-known end.Next a/b a:b x=y foo_bar x86_64: snake-case-name",
    "https://example.com/path?q=1 www.example.org user@example.com [#12](https://github.com/a/b/pull/12)",
    "Wait... what?! Really?? ... …and then — nothing – at all ~ maybe",
    "):  (: :) ;) :-) <3 :p (:) [:] [=] :* ^_^",
    "#hashtag ##double ### - • * 1. 2) a) ii.",
    "2.36.1-2+deb12u1 1:2.3-4ubuntu5 v1.2.3-rc.1 0x1F __init__.py",
    "文件不存在。 Это тест. Ceci n'est pas une pipe. ¿Qué tal? ¡Hola! Grüße, Straße.",
    "tabs\tand\u00a0non-breaking\u2009spaces\nnew\r\nlines\x0bvertical",
]


def test_vendored_tables_match_installed_spacy_and_datatrove():
    live = live_tables()
    for name, value in live.items():
        assert getattr(spacy_tables, name) == value, f"{name} differs: regenerate with generate_spacy_tables.py"


@pytest.mark.parametrize("text", TRICKY)
def test_word_split_equals_datatrove_on_tricky_text(text):
    assert EnglishSplitter().split(text) == datatrove_text.split_into_words(text, "eng")


def test_cached_tokenizer_returns_the_same_words_twice():
    tokenizer = WordTokenizer()
    text = " ".join(TRICKY)
    first = tokenizer.words(text)
    assert tokenizer.words(text) == first == datatrove_text.split_into_words(text, "eng")


LINES = [
    "One sentence only.",
    "First sentence. Second one! Third? Yes.",
    "Numbers like 3.14 and e.g. abbreviations. Do not split them.",
    "Quotes end sentences too.\" Then another.",
    ". Leading period then words.",
    "Ellipsis... does not end. But a period does.",
    "Multiple!!! Marks?! Here.",
    "Brackets (like this.) continue. Done.",
]


def test_sentence_count_equals_spacy_sentencizer():
    tokenizer = WordTokenizer()
    ours = _sentences_per_line(tokenizer, LINES)
    reference = [len(datatrove_text.split_into_sentences(line, "eng")) for line in LINES]
    assert ours.tolist() == reference


# --- the C splitter (_chunksplit.c) against the Python one ------------------------------------------

def test_compiled_splitter_is_built():
    """pip install -e builds _chunksplit.c; without it the word tables and every split run in Python, slower."""
    assert WordTokenizer().compiled is True
    assert WordTokenizer(implementation="python").compiled is False
    with pytest.raises(ValueError, match="unknown word split implementation"):
        WordTokenizer(implementation="fast")


def test_without_the_c_extension_the_python_split_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "selectd.text._chunksplit", None)  # import fails, as when not built
    tokenizer = WordTokenizer()
    assert tokenizer.compiled is False
    text = " ".join(TRICKY)
    assert tokenizer.words(text) == datatrove_text.split_into_words(text, "eng")
    assert tokenizer.token_counts([text]).tolist() == [len(datatrove_text.split_into_words(text, "eng"))]
    with pytest.raises(RuntimeError, match="_chunksplit.c"):
        WordTokenizer(implementation="compiled")


PIECES = (
    list(string.ascii_letters[:8]) + ["ab", "Xy", "U", "S", "US", "C", "A", "s", "S", "m", "km", "kg", "GB", "T",
                                      "mph", "in", "ft", "Pa", "hPa", "mbar", "km/h", "m/s", "x86"]
    + list(string.digits) + ["10", "3.5", "1,000"]
    + list(string.punctuation) + ["..", "...", "--", "---", "'s", "'S", "US$", "C$", "A$", "$", "%", "+", "^"]
    + ["http://", "https://", "www.", "example.com", ".org", "/path", "?q=1", "#x", "user@", ":8080", "192.168.0.1",
       "10.1.2.3", ".io", "a.b.c", "1.2.3.4", "255.255.255.254", "223.1.1.1", "ftp://", "user:pw@", "bücher.de",
       "例子.测试", ".co.uk", "localhost", ":80", "a.b", ".Com", ".é", "v1.2"]
    + ["can't", "e.g.", "i.e.", "U.S.", "a.m.", "p.m.", "(a)", "Mr.", "vs.", "''", ":)", "(:", "):", "o.O", "(-8",
       "'cause", "'em", "10a.m.", "Calif.", "gonna", "cannot", "y'all", "o'clock", "^_^", "(^_^)"]
    + ["é", "ü", "ß", "Ж", "ж", "文", "。", "，", "’s", "’", "‘", "“", "”", "«", "»", "…", "——", "—", "–", "°", "°C",
       "°F.", "km²", "м²", "€", "£", "₹", "٪", "؟", "¡", "¿", "½", "①", "Ⅻ", "Ａ", "ａ", "e\u0301", "\u200d", "😀", "✓",
       "\ud800", "ﬁ", "İ", "α", "Ω", "ё"]
)


def adversarial_chunks(count: int = 40_000, seed: int = 0) -> list[str]:
    """Random concatenations of affix, infix, URL, special-case and non-ASCII material, plus every
    printable ASCII chunk of one or two characters."""
    rng = random.Random(seed)
    pool = PIECES + list(spacy_tables.EN_SPECIAL_CASES)
    chunks = {"".join(pair) for pair in itertools.product(string.printable[:94], repeat=2)}
    chunks.update(string.printable[:94])
    while len(chunks) < count:
        chunks.add("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
    return sorted(chunks)


@pytest.fixture(scope="module")
def corpus_chunks(sample_corpus) -> list[str]:
    chunks: set[str] = set()
    with open(sample_corpus, "rb") as lines:
        for line in lines:
            chunks.update(orjson.loads(line)["text"].split())
    return sorted(chunks)


def test_compiled_split_equals_python_split(corpus_chunks):
    python, compiled = EnglishSplitter(), compiled_splitter(EnglishSplitter())
    chunks = corpus_chunks + adversarial_chunks()
    for chunk in chunks:
        assert compiled.split(chunk) == python.chunk_tokens(chunk), chunk


def test_compiled_and_python_tokenizers_intern_identically(sample_corpus):
    """Same token ids, vocabulary (order and token features), word counts and splits: the C word
    tables do PythonWordTables' and Vocabulary.sync's work themselves; a small chunk table is
    cleared between batches (at the same points: both hold every chunk split)."""
    texts = [orjson.loads(line)["text"] for line in open(sample_corpus, "rb")][:600] + TRICKY + [
        "", "  \t ", "cannot Cannot gonna y'all", "a\x1cb\x1fc d\u2028e\u00a0f\u3000g\x85h", "straße ŞEHİR ñ 文件",
        "x" * 300, "\ud800 lone surrogate"]
    results = []
    for implementation in ("compiled", "python"):
        tokenizer = WordTokenizer(max_chunks=20_000, implementation=implementation)
        batches = [tokenizer.tokenize(texts[start:start + 128]) for start in range(0, len(texts), 128)]
        results.append((batches, tokenizer.vocab, tokenizer.token_counts(texts), tokenizer.tables.splits))
    (compiled_batches, compiled_vocab, compiled_counts, compiled_splits), \
        (python_batches, python_vocab, python_counts, python_splits) = results
    assert compiled_vocab.strings == python_vocab.strings
    for feature in ("length", "is_word", "has_alpha", "ends_sentence", "opens_sentence"):
        assert getattr(compiled_vocab, feature).tolist() == getattr(python_vocab, feature).tolist(), feature
    for compiled, python in zip(compiled_batches, python_batches):
        assert compiled.ids.tolist() == python.ids.tolist()
        assert compiled.offsets.tolist() == python.offsets.tolist()
    assert compiled_counts.tolist() == python_counts.tolist()
    distinct = {chunk for text in texts for chunk in text.split()}
    assert compiled_splits == python_splits > len(distinct), "the full table was never cleared"


def test_word_counts_keep_no_tokens_and_equal_the_token_path(sample_corpus):
    """token_counts (FineWeb's count-only path) records chunk -> word count and interns nothing, in
    C as in Python, a full table cleared between batches; its counts equal the token path's; and a
    chunk the token path split first is counted from that same table, not split again."""
    texts = [orjson.loads(line)["text"] for line in open(sample_corpus, "rb")][:300] + TRICKY + [
        "", "  \t ", "cannot Cannot gonna y'all", "a\x1cb\x1fc d\u2028e\u00a0f\u3000g\x85h", "\ud800 lone surrogate"]
    batches = [texts[start:start + 128] for start in range(0, len(texts), 128)]
    letter_specials = EnglishSplitter().letter_specials
    counted_chunks = {chunk for text in texts for chunk in text.split()
                      if not chunk.isalpha() or chunk in letter_specials}
    assert len(counted_chunks) > 3_000
    tables = []
    for implementation in ("compiled", "python"):
        tokenized = WordTokenizer(implementation=implementation)
        expected = [count for batch in batches for count in tokenized.tokenize(batch).counts.tolist()]
        splits = tokenized.tables.splits
        assert [count for batch in batches for count in tokenized.token_counts(batch).tolist()] == expected
        assert tokenized.tables.splits == splits, "a chunk already split was split again"

        counting = WordTokenizer(implementation=implementation)
        assert [count for batch in batches for count in counting.token_counts(batch).tolist()] == expected
        assert len(counting.vocab) == 0
        assert counting.tables.splits == len(counted_chunks), "only the chunks that are no plain word are split"
        # a counted chunk is split again when it is first tokenized: its tokens were not interned
        assert counting.words(texts[0]) == tokenized.words(texts[0])
        assert counting.tables.splits > len(counted_chunks)

        small = WordTokenizer(max_chunks=3_000, implementation=implementation)
        assert [count for batch in batches for count in small.token_counts(batch).tolist()] == expected
        # the table filled up and was cleared: it holds fewer chunks than the texts have
        assert 0 < small.tables.chunks < len(counted_chunks) < small.tables.splits
        tables.append((small.tables.splits, small.tables.chunks))
    assert tables[0] == tables[1]


def test_every_special_case_passes_the_compiled_prefilter():
    """The C splitter skips the special-case table for a string whose (length, first, last character)
    bit is clear: every special case, alone as a chunk, must still come out as its own split."""
    python, compiled = EnglishSplitter(), compiled_splitter(EnglishSplitter())
    specials = [string for string in spacy_tables.EN_SPECIAL_CASES if string.split() == [string]]  # not " "
    for chunk in specials:
        assert compiled.split(chunk) == python.chunk_tokens(chunk), chunk
    words = sum(len(python.chunk_tokens(chunk)) for chunk in specials)
    for implementation in ("compiled", "python"):
        assert WordTokenizer(implementation=implementation).token_counts([" ".join(specials)]).tolist() == [words]


@pytest.mark.parametrize("text", TRICKY)
def test_compiled_tokenizer_words_equal_datatrove(text):
    assert WordTokenizer(implementation="compiled").words(text) == datatrove_text.split_into_words(text, "eng")


def test_ascii_program_refuses_what_it_cannot_express():
    for pattern in [r"(?:ab)+", r"a*(?:bc|d)", r"(?<=ab|c)d", r"(?i)a", r"x?", r"\bfoo"]:
        with pytest.raises(UnsupportedPattern):
            compile_program(pattern)
    with pytest.raises(UnsupportedPattern, match="anchored"):
        compile_program("a$|b", anchored_end=True)


def test_url_matcher_matches_what_the_url_pattern_matches(corpus_chunks):
    """EnglishSplitter.url_match skips the pattern's user-info part on strings without "@": the same
    strings match (corpus chunks, adversarial ones, and URL-shaped ones with and without user info)."""
    import re

    from selectd.text.affix_split import url_matcher

    pattern = re.compile(spacy_tables.EN_URL_PATTERN).match
    url_match = EnglishSplitter().url_match
    assert url_match is not pattern and url_matcher(r"^a\.b$")("a.b")
    hosts = ["example.com", "a.b.co.uk", "10.1.2.3", "223.1.1.1", "bücher.de", "localhost", "x.Com", "例子.测试"]
    shaped = [f"{scheme}{user}{host}{port}{path}" for scheme in ("", "https://", "ftp://", "a+b.c://")
              for user in ("", "user@", "user:pw@", "@", "a@b@") for host in hosts
              for port in ("", ":80", ":8080x") for path in ("", "/", "/p?q=1#x", "?", "@x")]
    strings = corpus_chunks + adversarial_chunks(10_000, seed=1) + shaped
    matched = 0
    for string in strings:
        expected = pattern(string)
        assert (url_match(string) is None) == (expected is None), string
        matched += expected is not None
    assert matched > 1000


def test_url_prefilter_reads_the_host_alternation():
    """The C splitter calls the URL regex only for strings with 3 dots (an IP address) or a '.' and
    two top-level-domain characters; the split equality tests above check it never drops a URL."""
    dots, tld = url_prefilter(spacy_tables.EN_URL_PATTERN)
    assert dots == 3
    assert ((ord("a"), ord("z")) in tld) and not any(low <= ord("A") <= high for low, high in tld)
    assert url_prefilter(r"^(?:https?://)?\S+$") is None
    assert url_prefilter(r"^(?:[a-z]+\.)+(?:[a-z]{2,63})$") is None  # the domain is not an alternation


def test_compiled_chunk_table_grows_and_clears():
    """The C chunk table grows while one batch adds 600,000 chunks, is cleared between batches when
    full (the vocabulary kept), and finds one chunk seen in str objects of every kind (1-, 2- and
    4-byte code units)."""
    tokenizer = WordTokenizer(max_chunks=2_000_000, implementation="compiled")
    python = WordTokenizer(implementation="python")
    tail = " common é€😀"
    many = [" ".join(f"w{i}x{j}" for j in range(1000)) + tail for i in range(600)]
    strings = tokenizer.vocab.strings
    assert [strings[i] for i in tokenizer.tokenize(many).ids.tolist()] == [
        word for text in many for word in text[:-len(tail)].split() + python.words(tail)]
    assert tokenizer.tables.chunks > 600_000

    kinds = ["same chunk", "same chunk é", "same chunk €", "same chunk 😀"]  # the str's kind changes
    tokenizer.max_chunks = 10
    vocabulary = len(tokenizer.vocab)
    for texts in (kinds, kinds[::-1]):  # the full table is cleared first, then its chunks are known
        batch = tokenizer.tokenize(texts)
        assert tokenizer.tables.chunks == 5
        assert [strings[i] for i in batch.ids.tolist()] == [w for text in texts for w in python.words(text)]
        assert len(set(batch.ids[batch.offsets[:-1]].tolist())) == 1, "one id for 'same' in every kind of str"
    assert len(tokenizer.vocab) == vocabulary + 4  # same, chunk, é, €: 😀 was kept from before the clears
