"""The Instruct model's frame comes off each answer, whole or streamed in any pieces, and nothing else does."""

import random

import pytest

from server.serving.framing import FrameStripper

# (answer, language asked for, prompt, what is left): the phrasings as public Qwen2-Audio outputs show them
# (sources in server/serving/framing.py), and answers that only look like them.
CASES = [
    ("The original content of this audio is: 'Mister Quiller is the apostle of the middle classes.'", None, None,
     "Mister Quiller is the apostle of the middle classes."),
    ("The original content of this audio is:'yet these thoughts affected Hester Pynne less with hope.'", None, None,
     "yet these thoughts affected Hester Pynne less with hope."),
    ("The speech transcribed verbatim is: the law of production, the law of beauty.", None, None,
     "the law of production, the law of beauty."),
    ("The audio says: 'Turn left at the station.'", None, None, "Turn left at the station."),
    ("The audio transcription is: \"We meet at ten.\"", None, None, "We meet at ten."),
    ("这段音频的原始内容是:'这是一封来自四川攀枝花钢铁厂的信'", None, None, "这是一封来自四川攀枝花钢铁厂的信"),
    ("这段音频的原始内容是：'大家好，我是常林小学一年级四班的学生。'", None, None, "大家好，我是常林小学一年级四班的学生。"),
    ("这段语音的原始文本内容是：今天天气很好", None, None, "今天天气很好"),
    ("The English translation is: \"Everyone wants to be appreciated.\"", "English", None,
     "Everyone wants to be appreciated."),
    ("The translation is: 'Bonjour à tous.'", "French", None, "Bonjour à tous."),
    ("翻译成英文是：“Everyone wants to be appreciated.”", "English", None, "Everyone wants to be appreciated."),
    ("English: Good morning, everyone.", "English", None, "Good morning, everyone."),
    ("[English] Good morning.", "English", None, "Good morning."),
    ("中文：早上好", "Chinese", None, "早上好"),
    ("'The whole answer is one quotation.'", None, None, "The whole answer is one quotation."),
    ("Kubernetes, Zürich and Helm. We deployed it.", None, "Kubernetes Zürich and Helm", "We deployed it."),
    ("The original content of this audio is: 'It ends with a period.'.", None, None, "It ends with a period.."),
    # what must stay as it is
    ("English is my second language.", "English", None, "English is my second language."),
    ("The audio system failed at noon.", None, None, "The audio system failed at noon."),
    ("The original plan was simpler.", None, None, "The original plan was simpler."),
    ("'Hello,' she said, 'come in.'", None, None, "'Hello,' she said, 'come in.'"),
    ("这段时间我很忙", None, None, "这段时间我很忙"),
    (" the model's own leading space stays", None, None, " the model's own leading space stays"),
    ("Hello there, how are you", None, "Hello", "Hello there, how are you"),  # a one-word prompt is not an echo
    ("", None, None, ""),
]


@pytest.mark.parametrize(("answer", "language", "prompt", "left"), CASES, ids=[c[3][:40] or "empty" for c in CASES])
def test_the_frame_comes_off_whole_and_streamed_in_any_pieces(answer, language, prompt, left):
    assert FrameStripper(language, prompt).strip(answer) == left
    rng = random.Random(answer)
    for _ in range(5):
        stripper, streamed, position = FrameStripper(language, prompt), "", 0
        while position < len(answer):
            size = rng.randint(1, 6)
            streamed += stripper.push(answer[position : position + size])
            position += size
        assert streamed + stripper.finish() == left


def test_the_start_is_held_only_until_the_frame_is_ruled_out():
    stripper = FrameStripper()
    assert stripper.push("The") == "" and stripper.push(" origin") == ""
    assert stripper.push("al plan") == "The original plan"  # no lead phrase goes on like that
    assert stripper.push(" was") == " was"


def test_after_a_frame_only_a_possible_closing_quote_is_held():
    stripper = FrameStripper()
    assert stripper.push("The original content of this audio is: 'Hel") == "Hel"
    assert stripper.push("lo'") == "lo"  # this quote may close the frame
    assert stripper.push(" world") == "' world"  # it did not
    assert stripper.push(".'") == "."
    assert stripper.finish() == ""


def test_what_was_removed_is_said_by_character_ranges():
    stripper = FrameStripper()
    answer = "The original content of this audio is: 'Hi.'"
    assert stripper.strip(answer) == "Hi."
    assert stripper.removed() == [(0, len("The original content of this audio is: '")), (len(answer) - 1, len(answer))]
