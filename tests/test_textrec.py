"""Text-aware recommenders: content scores, text-initialised SASRec/BERT4Rec, cold start."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import bert4rec, evaluate, metrics, textrec
from helpers.ids import PAD
from helpers.sasrec import SASRecConfig
from helpers.split import leave_one_out
from helpers.train import TrainConfig, train
from toys import successor_df, text_vectors


# ---------------------------------------------------------------- content scores
def test_content_scores_by_hand():
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])  # item 3 not unit: normalised
    model = textrec.ContentRecommender(items, max_len=4)
    scores = model.score(torch.tensor([[0, 0, 1, 2]]))  # user = mean(e1, e2) -> (1, 1) / sqrt(2)
    s = float(1 / np.sqrt(2))
    assert scores[0, PAD] == float("-inf")
    assert torch.allclose(scores[0, 1:], torch.tensor([s, s, (0.6 + 0.8) * s]))
    recent = textrec.ContentRecommender(items, max_len=4, decay=0.5)
    user = recent.user_vectors(torch.tensor([[0, 0, 1, 2]]))  # weights 0.5 for item 1, 1 for item 2
    assert torch.allclose(user, F.normalize(torch.tensor([[0.5, 1.0]]), dim=1))


def test_content_recommender_never_recommends_pad_and_ranks_by_text():
    vectors = text_vectors()
    vectors[5] = vectors[3]  # items 3 and 5 have the same text
    model = textrec.ContentRecommender(vectors, max_len=5)
    scores = model.score(torch.tensor([[0, 0, 0, 0, 3]]))
    assert scores.shape == (1, 21) and scores.argmax() != PAD
    assert scores[0, 5] == pytest.approx(1.0) and scores[0, 3] == pytest.approx(1.0)
    history = leave_one_out(successor_df()).test
    result = evaluate.evaluate(model, history, 20, ks=(5,))
    assert (result.top_items != PAD).all()
    with pytest.raises(ValueError, match="decay"):
        textrec.ContentRecommender(vectors, decay=0.0)


# ---------------------------------------------------------------- text-initialised models
def test_text_item_embedding_starts_from_text_and_keeps_pad_zero():
    vectors = text_vectors()
    emb = textrec.TextItemEmbedding(vectors, hidden=8)
    expected = vectors @ emb.proj.weight.T + emb.proj.bias  # ID part starts at zero
    expected[PAD] = 0
    assert torch.allclose(emb.weight, expected)
    ids = torch.tensor([[0, 3, 7]])
    assert torch.equal(emb(ids), emb.weight[ids])
    with torch.no_grad():
        emb.ids.add_(1.0)
    assert torch.equal(emb.weight[PAD], torch.zeros(8))  # PAD stays zero whatever is learned
    names = {n for n, p in emb.named_parameters()}
    assert names == {"proj.weight", "proj.bias", "ids", "extra"}  # the text itself is not trained
    assert textrec.TextItemEmbedding(vectors, 8, id_embeddings=False).ids is None
    emb.forget([3])
    assert torch.equal(emb.ids[3], torch.zeros(8)) and emb.ids[4].sum() == 8


def test_text_sasrec_trains_with_the_shared_loop():
    split = leave_one_out(successor_df())
    torch.manual_seed(0)
    config = SASRecConfig(20, max_len=8, hidden=16, n_layers=1, n_heads=2, dropout=0.0)
    model = textrec.text_sasrec(config, text_vectors())
    assert isinstance(model.item_emb, textrec.TextItemEmbedding)
    result = train(model, split, TrainConfig(epochs=6, batch_size=16, lr=1e-2, max_len=8, patience=10),
                   progress=False)
    loss = result.history["loss"].to_numpy()
    assert loss[-1] < 0.5 * loss[0]
    scores = model.score(torch.tensor([[0, 0, 0, 0, 0, 0, 4, 5]]))
    assert scores.shape == (1, 21) and scores[0, PAD] == float("-inf") and scores.argmax() == 6
    with pytest.raises(ValueError, match="rows"):
        textrec.text_sasrec(config, text_vectors(n_items=19))


def test_text_bert4rec_ties_decoder_to_text_embedding_and_trains():
    split = leave_one_out(successor_df(n_users=300))
    torch.manual_seed(0)
    config = bert4rec.BERT4RecConfig(20, max_len=8, hidden=16, n_layers=1, n_heads=2, dropout=0.0,
                                     mask_prob=0.3)
    model = textrec.text_bert4rec(config, text_vectors())
    emb = model.mlm.bert.embeddings.word_embeddings
    assert emb.weight.shape == (22, 16)  # PAD, 20 items, MASK
    x = torch.tensor([[0, 3, 4, 21]])
    logits, _ = model(x)
    h = model.hidden(x)
    expected = model.mlm.cls.predictions.transform(h) @ emb.weight.T + model.mlm.cls.predictions.bias
    assert torch.allclose(logits, expected, atol=1e-6)  # the output layer reads the text embedding
    result = train(model, split, TrainConfig(epochs=6, batch_size=16, lr=1e-2, max_len=8, patience=10),
                   make_batches=bert4rec.cloze_batches(config), progress=False)
    loss = result.history["loss"].to_numpy()
    assert loss[-1] < 0.9 * loss[0]
    scores = model.score(torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5]]))
    assert scores.shape == (1, 21) and scores[0, PAD] == float("-inf")


# ---------------------------------------------------------------- cold start
def timed_df(seed=0, n_users=80, n_items=30) -> pd.DataFrame:
    """Random sequences with increasing times, in each user's chronological order."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(3, 12))
        times = np.sort(rng.integers(0, 1000, n))
        rows += [(u, int(i), int(t)) for i, t in zip(rng.choice(np.arange(1, n_items + 1), n, replace=False), times)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@pytest.mark.parametrize("how", ["newest", "random"])
def test_cold_items_never_in_training_or_histories(how):
    df = timed_df()
    split, cold = textrec.cold_start_split(df, 30, cold_fraction=0.2, how=how)
    assert len(cold) == 6 and len(set(cold)) == 6 and cold.min() >= 1
    for sequences in (split.train, split.valid.histories, split.test.histories):
        assert not np.isin(np.concatenate(sequences), cold).any()
    assert not np.isin(split.valid.targets, cold).any()  # validation stays warm
    assert np.isin(split.test.targets, cold).any()  # some test targets are cold
    for u, history, target in zip(split.test.users, split.test.histories, split.test.targets):
        seq = df.loc[df.user_id == u, "item_id"].to_numpy()
        assert target == seq[-1]  # the test target is the user's real last item
        assert history.tolist() == [i for i in seq[:-1] if i not in cold]


def test_cold_items_newest_are_the_latest_first_seen():
    df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [1, 2, 3, 2, 4, 5],
                       "timestamp": [0, 5, 9, 1, 7, 8]})  # first seen: 1@0, 2@1, 4@7, 5@8, 3@9
    assert textrec.cold_items_newest(df, 5, 0.4).tolist() == [3, 5]
    split, cold = textrec.cold_start_split(df, 5, cold_fraction=0.4)
    assert split.test.targets.tolist() == [3, 5] and split.test.histories[0].tolist() == [1, 2]
    assert [s.tolist() for s in split.train] == [[1], [2]]
    with pytest.raises(ValueError, match="how"):
        textrec.cold_start_split(df, 5, how="oldest")
    with pytest.raises(ValueError, match="1..5"):
        textrec.cold_start_split(df, 5, cold_items=[6])


def genre_df(n_users=300, n_genres=4, per_genre=10, length=8, seed=0) -> pd.DataFrame:
    """Each user picks ``length`` distinct items of one genre; genre g = items g*per_genre+1..."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, n_genres, n_users)
    items = np.stack([g * per_genre + 1 + rng.permutation(per_genre)[:length] for g in genre])
    return pd.DataFrame({"user_id": np.repeat(np.arange(n_users), length), "item_id": items.ravel(),
                         "timestamp": np.tile(np.arange(length), n_users)})


def test_id_model_cannot_rank_cold_items_but_text_can():
    """Users stay inside one genre and an item's text is its genre: a text model places a
    never-trained item next to its genre; an ID model has nothing to go on."""
    n_genres, per_genre = 4, 10
    n = n_genres * per_genre
    genre = np.r_[-1, np.repeat(np.arange(n_genres), per_genre)]
    vectors = torch.tensor(np.eye(n_genres)[np.maximum(genre, 0)], dtype=torch.float32)  # (V, 4)
    vectors[PAD] = 0
    cold_items = [g * per_genre + k for g in range(n_genres) for k in (1, 2)]  # 2 per genre
    split, cold = textrec.cold_start_split(genre_df(), n, cold_items=cold_items)
    assert cold.tolist() == sorted(cold_items)
    config = SASRecConfig(n, max_len=8, hidden=16, n_layers=1, n_heads=2, dropout=0.0)
    tc = TrainConfig(epochs=10, batch_size=32, lr=1e-2, max_len=8, patience=20)
    results = {}
    for name, model in [("id", textrec.SASRec(config)),
                        ("text", textrec.text_sasrec(config, vectors, id_embeddings=False))]:
        train(model, split, tc, progress=False)
        results[name] = evaluate.evaluate(model, split.test, n)
    pop = metrics.item_popularity(split.train, n)
    tables = {k: textrec.by_target(r, cold, pop, ci=["hr@5"], n_resamples=50) for k, r in results.items()}
    assert set(tables["id"].index) == {("all", "all"), ("cold start", "cold"), ("cold start", "warm"),
                                       ("popularity", "head"), ("popularity", "tail")}
    n_cold = np.isin(split.test.targets, cold).sum()
    assert n_cold > 20 and tables["id"].loc[("cold start", "cold"), "users"] == n_cold
    cold_hr = {k: t.loc[("cold start", "cold"), "hr@5"] for k, t in tables.items()}
    # An untrained ID row scores about 0: above the other genres, which training pushed
    # down, so the ID model still gets some cold hits here; text puts cold items in the genre.
    assert cold_hr["text"] > 0.9 and cold_hr["id"] < 0.5
    assert tables["id"].loc[("cold start", "warm"), "hr@5"] > 0.9  # the ID model did learn the genres


@pytest.mark.shared_data
def test_llamarec_latest_small_has_llamarecs_counts():
    prepared = textrec.llamarec_latest_small()
    assert (prepared.n_users, prepared.n_items, len(prepared.interactions)) == textrec.LLAMAREC_COUNTS


def test_split_time_and_tags_before_keep_only_the_past():
    """The split point is the first event on any cold item; tags written at or after it are dropped,
    so no cold item (nobody had met it yet) carries a tag, and title, year and genres stay."""
    df = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 1, 3, 3],
                       "timestamp": [10, 20, 30, 40, 50]})
    assert textrec.split_time(df, np.array([3])) == 40
    assert textrec.split_time(df, np.array([2, 3])) == 20
    with pytest.raises(ValueError):
        textrec.split_time(df, np.array([7]))
    items = pd.DataFrame({"item_id": [101, 102, 103], "title": ["A", "B", "C"], "year": [1990, 1991, 1992],
                          "genres": [["Drama"], ["Comedy"], []], "tags": [["old"], ["x"], ["spoiler"]]})
    tags = pd.DataFrame({"user_id": [1, 2, 2, 3, 3], "item_id": [101, 101, 103, 101, 102],
                         "tag": ["old", "classic", "spoiler", "old", "x"], "timestamp": [5, 39, 41, 12, 40]})
    out = textrec.tags_before(items, tags, cutoff=40)
    assert out["tags"].tolist() == [["old", "classic"], [], []]  # distinct, in file order; 40 is not before 40
    assert out[["item_id", "title", "year", "genres"]].equals(items[["item_id", "title", "year", "genres"]])
    assert items["tags"].tolist() == [["old"], ["x"], ["spoiler"]]  # the input is not changed
    # no cutoff: every event's tag, so texts can be rebuilt from events without a held-out user's
    assert textrec.tags_before(items, tags[tags.user_id != 2], None)["tags"].tolist() == [["old"], ["x"], []]
