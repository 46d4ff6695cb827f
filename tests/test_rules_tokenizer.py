"""Our port of datatrove's word split (spaCy's English tokenizer) and sentence count against the real thing."""
import pytest

from selectd.scorers.rules import reference_tables
from selectd.scorers.rules.c4 import _sentences_per_line
from selectd.scorers.rules.tables import live_tables
from selectd.scorers.rules.tokenizer import EnglishSplitter, WordTokenizer

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
        assert getattr(reference_tables, name) == value, f"{name} differs: regenerate with tables.py"


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
    ours = _sentences_per_line(tokenizer, [line.split() for line in LINES])
    reference = [len(datatrove_text.split_into_sentences(line, "eng")) for line in LINES]
    assert ours.tolist() == reference
