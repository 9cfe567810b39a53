"""Histories as text, next-item examples and labels, tokenised data sets."""

import numpy as np
import pandas as pd
import pytest

from helpers import split, textdata
from helpers.text import DEFAULT_MODEL, resolve_model

TEXTS = ["", "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Up (2009)", "Jaws (1975)"]


@pytest.fixture(scope="module")
def tokenizer():
    return textdata.load_tokenizer(DEFAULT_MODEL)


def log() -> pd.DataFrame:
    """Two users, five interactions each, unique items per user; ratings 1..5."""
    rows = [(1, i, t, r) for t, (i, r) in enumerate(zip([1, 2, 3, 4, 5], [5, 4, 1, 2, 3]))]
    rows += [(2, i, t, r) for t, (i, r) in enumerate(zip([5, 3, 1, 2, 4], [1, 4, 5, 2, 4]))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def test_history_text_keeps_the_most_recent_items_last():
    h = np.array([1, 2, 3])
    assert textdata.history_text(TEXTS, h) == "Toy Story (1995); Heat (1995); Alien (1979)"
    assert textdata.history_text(TEXTS, h, max_items=2) == "Heat (1995); Alien (1979)"
    assert textdata.history_text(TEXTS, h, max_items=0) == ""
    rated = textdata.history_text(TEXTS, h, max_items=2, ratings=np.array([5.0, 3.5, 4.0]))
    assert rated == "Heat (1995) (rated 3.5); Alien (1979) (rated 4)"
    with pytest.raises(ValueError, match="ratings"):
        textdata.history_text(TEXTS, h, ratings=np.array([5.0]))


def test_tokenizer_drops_the_oldest_items_first(tokenizer):
    texts = [textdata.history_text(TEXTS, np.array([1, 2, 3, 4, 5]))]
    data = textdata.text_dataset(tokenizer, texts, [0], max_length=8)
    decoded = tokenizer.decode(data[0]["input_ids"], skip_special_tokens=True)
    assert decoded.endswith("jaws ( 1975 )") and "toy" not in decoded
    pair = textdata.text_dataset(tokenizer, texts, [1], pairs=["Up (2009)"], max_length=12)
    ids = pair[0]["input_ids"]
    assert len(ids) == 12 and tokenizer.decode(ids).endswith("[SEP] up ( 2009 ) [SEP]")


def test_long_candidates_keep_their_start_and_leave_room_for_the_history(tokenizer):
    assert textdata.clip_texts(tokenizer, ["Toy Story (1995)", "Up"], 3) == ["Toy Story (", "Up"]
    long = "Up (2009). Tags: " + ", ".join(["balloons"] * 40)
    data = textdata.text_dataset(tokenizer, ["Heat (1995); Alien (1979)"], [1], pairs=[long], max_length=16)
    decoded = tokenizer.decode(data[0]["input_ids"])
    assert len(data[0]["input_ids"]) == 16 and "alien" in decoded and "[SEP] up ( 2009 )" in decoded


def test_text_dataset_refuses_right_truncation(tokenizer):
    from transformers import AutoTokenizer

    right = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    with pytest.raises(ValueError, match="truncation_side"):
        textdata.text_dataset(right, ["a"], [0])


def test_examples_never_see_the_validation_or_test_target():
    s = split.leave_one_out(log(), n_items=5)
    train = textdata.prefix_examples(s)
    assert len(train) == 2 * 2  # 3 training items per user -> 2 prefixes each
    for ev in (s.valid, s.test):
        for user, target in zip(ev.users, ev.targets):
            mine = [j for j, u in enumerate(train.users) if u == user]
            assert all(target not in train.histories[j] and target != train.targets[j] for j in mine)
    last = textdata.prefix_examples(s, last=1)
    assert last.targets.tolist() == [3, 1] and [h.tolist() for h in last.histories] == [[1, 2], [5, 3]]


def test_next_values_reads_the_target_interaction():
    df = log()
    s = split.leave_one_out(df, n_items=5)
    assert textdata.next_values(df, s.test).tolist() == [3, 4]  # the last ratings
    assert textdata.next_values(df, s.valid).tolist() == [2, 2]
    assert textdata.next_values(df, textdata.prefix_examples(s)).tolist() == [4, 1, 4, 5]
    assert [v.tolist() for v in textdata.history_values(df, s.test)] == [[5, 4, 1, 2], [1, 4, 5, 2]]
    bad = split.EvalSet(np.array([1]), [np.array([1])], np.array([3]))  # 3 is not right after 1
    with pytest.raises(ValueError, match="prefix"):
        textdata.next_values(df, bad)


def test_first_genres():
    items = pd.DataFrame({"item_id": [10, 20, 30], "genres": [["Drama", "War"], [], ["Action"]]})

    class Ids:
        def item_to_original(self, ids):
            return np.array([30, 10, 20])[np.asarray(ids) - 1]

    classes, names = textdata.first_genres(items, Ids(), 3)
    assert names == ["(none)", "Action", "Drama"] and classes.tolist() == [-1, 1, 2, 0]
