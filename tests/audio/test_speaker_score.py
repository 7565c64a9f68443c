"""The accuracy measure: speech time given the right speaker, under the best one-to-one mapping of letters."""

import pytest

from server.bench.speaker_score import speaker_accuracy

TRUTH = [(0.0, 4.0, "ann"), (4.0, 6.0, "bob"), (7.0, 9.0, "ann")]


def test_the_right_speakers_under_other_letters_score_everything():
    assert speaker_accuracy(TRUTH, [(0.0, 4.0, "B"), (4.0, 6.0, "A"), (7.0, 9.0, "B")]) == pytest.approx(1.0)


def test_wrong_or_missing_time_is_the_share_lost():
    # bob's 2 s given to ann's label, and 1 s of ann's last turn unlabelled: 5 of 8 s right
    assert speaker_accuracy(TRUTH, [(0.0, 6.0, "A"), (8.0, 9.0, "A")]) == pytest.approx(5 / 8)


def test_labels_where_nobody_speaks_cost_nothing():
    assert speaker_accuracy(TRUTH, [(0.0, 4.0, "A"), (4.0, 6.0, "B"), (6.0, 9.5, "A")]) == pytest.approx(1.0)


def test_one_label_cannot_be_two_speakers():
    assert speaker_accuracy(TRUTH, [(0.0, 9.0, "A")]) == pytest.approx(6 / 8)


def test_a_known_speaker_counts_only_under_its_own_name():
    named = [(0.0, 4.0, "ann"), (4.0, 6.0, "A"), (7.0, 9.0, "ann")]
    assert speaker_accuracy(TRUTH, named, known=["ann"]) == pytest.approx(1.0)
    swapped = [(0.0, 4.0, "bob"), (4.0, 6.0, "ann"), (7.0, 9.0, "bob")]
    assert speaker_accuracy(TRUTH, swapped, known=["ann", "bob"]) == 0.0
    # ann's time under a letter is wrong once ann was known
    assert speaker_accuracy(TRUTH, [(0.0, 4.0, "A"), (4.0, 6.0, "B"), (7.0, 9.0, "A")], known=["ann"]) == pytest.approx(2 / 8)
