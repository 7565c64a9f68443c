"""The random-weight model's tokenizer: a byte-level BPE learnt here, laid out as the published one, so that every
special token has its published id.
"""

import itertools
import json

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer

# The published tokenizer: 151,643 byte-level BPE tokens, then its special tokens in this order, so that
# <|endoftext|> is 151643, <|im_start|> 151644, <|im_end|> 151645 and <|AUDIO|> 151646 (docs/qwen2-audio.md;
# <|audio_bos|> and <|audio_eos|> follow). The embedding has 156032 rows, more than the tokenizer has ids.
REGULAR_TOKENS = 151_643
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
VOCAB_ROWS = 156_032

# Training text: English, Chinese and accented words, so the vocabulary holds multi-byte characters
# and tokens that split them (streaming must never emit half a character).
_CORPUS = [
    "The quick brown fox jumps over the lazy dog while the audio model listens to every word.",
    "Please transcribe this recording of a meeting about the quarterly budget and the new office.",
    "Detect the language and recognize the speech. Translate the speech into English, German or French.",
    "Recognize the emotion with keywords in English: happy, sad, angry, neutral, surprised, calm.",
    "Generate the caption in English: a dog barks, rain falls, glass breaks, music plays softly.",
    "语音识别和翻译是这个模型的主要功能。今天天气很好，我们去公园散步吧。",
    "音乐、笑声、掌声和鸟叫声都可以被识别出来。请把这段话翻译成英文。",
    "Café, naïve, über, señor, façade, smörgåsbord, Ærø, œuvre, déjà vu, Zürich, Kraków.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024, dates and times like 10:30 and 3.5 seconds.",
]


def train_tokenizer(trained: int = 1000) -> Qwen2Tokenizer:
    """A byte-level BPE of up to `trained` tokens learnt from the corpus above, filled up to the published
    tokenizer's 151,643 with pieces no text encodes to (so each special token has its published id), in the real
    Qwen2 tokenizer class."""
    vocab, merges = _learn_bpe(trained)
    fillers = (f"{a}{b}{c}" for a, b, c in itertools.product(sorted(pre_tokenizers.ByteLevel.alphabet()), repeat=3))
    for token in fillers:
        if len(vocab) == REGULAR_TOKENS:
            break
        vocab.setdefault(token, len(vocab))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>", model_max_length=8192)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


def spoken_ids(trained: int = 1000) -> list[int]:
    """The ids text encodes to with train_tokenizer(trained): the learnt tokens and the special ones."""
    learnt = len(_learn_bpe(trained)[0])
    return [*range(learnt), *range(REGULAR_TOKENS, REGULAR_TOKENS + len(SPECIAL_TOKENS))]


def _learn_bpe(trained: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    template = Qwen2Tokenizer()  # carries Qwen2's real pre-tokenizer (split regex + byte level)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = template.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=trained, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_CORPUS * 20, trainer=trainer)
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    return bpe.get_vocab(), merges
