"""Streaming text never splits a character and never shows a stop string, with the real (tiny) Qwen2 tokenizer."""

import pytest

from server.engine.incremental_detokenizer import IncrementalDetokenizer

pytestmark = pytest.mark.transformers  # scripts/test runs it on the lowest supported transformers too


def _decode(tokenizer):
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _byte_tokens(tokenizer, text: str) -> list[int]:
    """One token per UTF-8 byte: the worst case, every multi-byte character split across tokens."""
    symbols = _bytes_to_unicode()
    return [tokenizer.convert_tokens_to_ids(symbols[b]) for b in text.encode()]


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet (GPT-2's, which Qwen2 uses): printable bytes map to themselves, the rest above 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}


@pytest.mark.parametrize("text", ["语音识别", "Café über naïve", "emoji 🎵 ok", "mixed 和 text"])
def test_split_characters_are_held_back_until_complete(tokenizer, text):
    ids = _byte_tokens(tokenizer, text)
    detok = IncrementalDetokenizer(_decode(tokenizer), stop=[])
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text == detok.text
    assert len(ids) > len(text)  # the case under test: characters really were split


def test_deltas_add_up_to_the_full_decode(tokenizer):
    ids = tokenizer.encode("The quick brown fox 语音识别 and 🎵 music, déjà vu.")
    detok = IncrementalDetokenizer(_decode(tokenizer), stop=[])
    streamed = "".join(detok.push(i) for i in ids) + detok.flush()
    assert streamed == _decode(tokenizer)(ids)


def test_stop_string_ends_the_text_and_is_never_streamed(tokenizer):
    ids = tokenizer.encode("hello world, STOP here and more")
    detok = IncrementalDetokenizer(_decode(tokenizer), stop=["STOP"])
    streamed = ""
    for token in ids:
        streamed += detok.push(token)
        assert "STOP"[:2] not in streamed[-2:] or not detok.stopped
        if detok.stopped:
            break
    streamed += detok.flush()
    assert detok.stopped
    assert streamed == "hello world, " == detok.text


def test_a_partial_stop_prefix_is_released_when_it_turns_out_not_to_be_a_stop(tokenizer):
    ids = tokenizer.encode("a ST b")
    detok = IncrementalDetokenizer(_decode(tokenizer), stop=["STOP"])
    streamed = "".join(detok.push(i) for i in ids) + detok.flush()
    assert not detok.stopped
    assert streamed == "a ST b"
