"""Stage 02: SASRec model, rankings, metrics, stored top-N and training on the tiny data set."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recnb import artifacts as col
from recnb.sasrec.config import SASRecConfig
from recnb.sasrec.evaluate import (
    build_teacher_topk,
    evaluate_all,
    evaluate_popularity,
    hit_rate_at_k,
    ndcg_at_k,
    split_histories,
)
from recnb.sasrec.model import (
    Architecture,
    SASRec,
    load_sasrec,
    save_sasrec,
    score_histories,
    teacher_rank,
    teacher_rank_batch,
)
from recnb.sasrec.train import build_sasrec, train_sasrec, training_windows, window_loss

N_ITEMS = 30


@pytest.fixture()
def model() -> SASRec:
    torch.manual_seed(0)
    pop = np.arange(N_ITEMS + 1, dtype=np.float32)  # item j has popularity j
    return SASRec(Architecture(n_items=N_ITEMS, max_len=6, hidden=16, blocks=2, heads=2, dropout=0.0), pop).eval()


@pytest.fixture()
def splits() -> pd.DataFrame:
    return pd.DataFrame({
        col.USER: [1, 2],
        col.TRAIN_ITEMS: [[1, 2, 3, 4], [5, 6, 7]],
        col.VALID_ITEM: [8, 9],
        col.TEST_ITEM: [10, 11],
    })


def test_attention_is_causal(model):
    seq = torch.tensor([[0, 3, 7, 1, 9, 4]])
    changed = seq.clone()
    changed[0, 4:] = torch.tensor([22, 15])  # only the last two (future) positions differ
    out, out_changed = model.encode(seq), model.encode(changed)
    assert torch.equal(out[0, :4], out_changed[0, :4])
    assert not torch.allclose(out[0, 4:], out_changed[0, 4:])


def test_history_items_are_masked_and_ranked_last(model):
    history = [4, 9, 17]
    scores = score_histories(model, [history])[0]
    assert torch.isinf(scores[[0, *history]]).all() and torch.isfinite(scores[1:]).sum() == N_ITEMS - 3
    ranks = teacher_rank(model, history, history)
    assert sorted(ranks) == [N_ITEMS - 3, N_ITEMS - 2, N_ITEMS - 1]  # after the 27 unmasked items, by id


def test_teacher_rank_matches_brute_force_sort(model):
    rng = np.random.default_rng(0)
    histories = [list(rng.choice(np.arange(1, N_ITEMS + 1), size=n, replace=False)) for n in (1, 3, 6, 9)]
    queries = [list(rng.permutation(np.arange(1, N_ITEMS + 1))[:k]) for k in (5, 1, 30, 7)]
    got = teacher_rank_batch(model, histories, queries)
    for history, query, ranks in zip(histories, queries, got):
        scores = model(torch.tensor([[0] * (6 - min(len(history), 6)) + history[-6:]]))[0].tolist()
        masked = set(history[-6:])
        order = sorted(range(1, N_ITEMS + 1), key=lambda j: (j in masked, 0.0 if j in masked else -scores[j], j))
        assert list(ranks) == [order.index(j) for j in query]
        assert list(ranks) == list(teacher_rank(model, history, query))


def test_long_history_is_truncated_and_empty_one_uses_popularity(model):
    long = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert torch.equal(score_histories(model, [long]), score_histories(model, [long[-6:]]))
    # popularity j for item j: item 30 first, then 29, ...
    assert list(teacher_rank(model, [], [30, 29, 1])) == [0, 1, 29]


def test_out_of_range_ids_raise_clear_errors(model):
    with pytest.raises(ValueError, match="item id 31 outside 1..30"):
        teacher_rank(model, [1, 31], [2])
    with pytest.raises(ValueError, match="item_ids holds item id 0"):
        teacher_rank(model, [1], [0])


def test_hr_and_ndcg_on_hand_made_ranks():
    ranks = np.array([0, 3, 9, 10])
    assert hit_rate_at_k(ranks, 5) == 0.5
    assert hit_rate_at_k(ranks, 10) == 0.75
    assert ndcg_at_k(ranks, 5) == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 4)


def test_popularity_baseline_masks_history(splits):
    pop = np.zeros(N_ITEMS + 1, dtype=np.float32)
    pop[[8, 9, 3]] = [5, 1, 10]  # order: 3, 8, 9, then 1, 2, 4, ... by id
    # valid: user 1 (history 1-4, 3 masked) ranks 8 first; user 2 ranks 9 behind 3 and 8
    assert evaluate_popularity(pop, splits, "valid", max_len=6, ks=(1, 5)) == {
        "hr@1": 0.5, "ndcg@1": 0.5, "hr@5": 1.0, "ndcg@5": pytest.approx((1 + 1 / math.log2(4)) / 2)}


def test_split_histories_follow_the_contract(splits):
    assert split_histories(splits, "train")[1:] == ([[1, 2, 3], [5, 6]], pytest.approx([4, 7]))
    assert split_histories(splits, "test")[1] == [[1, 2, 3, 4, 8], [5, 6, 7, 9]]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        split_histories(splits, "dev")


def test_training_windows_cover_the_sequence_end_first():
    windows = training_windows([[1, 2, 3, 4, 5], [7]], max_len=3)
    assert windows.tolist() == [[2, 3, 4, 5], [0, 0, 1, 2]]  # [7] has nothing to predict


def test_save_load_round_trip_gives_identical_predictions(model, tmp_path):
    histories = [[1, 2, 3], [], [5, 6, 7, 8, 9, 10, 11]]
    loaded = load_sasrec(save_sasrec(model, tmp_path / "sasrec.pt", extra={"lr": 0.1}))
    assert loaded.cfg == model.cfg
    assert torch.equal(score_histories(loaded, histories), score_histories(model, histories))
    assert torch.load(tmp_path / "sasrec.pt", weights_only=True)["extra"] == {"lr": 0.1}


def test_teacher_topk_rows_match_teacher_rank(model, splits):
    topk = build_teacher_topk(model, splits, top_n=10)
    assert len(topk) == 6 and list(topk["split"].unique()) == ["train", "valid", "test"]
    row = topk[(topk[col.USER] == 1) & (topk["split"] == "test")].iloc[0]
    assert list(row["history"]) == [1, 2, 3, 4, 8] and row["target"] == 10
    assert not set(row["topk_items"]) & set(row["history"])
    assert list(teacher_rank(model, list(row["history"]), list(row["topk_items"]))) == list(range(10))
    assert row["target_rank"] == teacher_rank(model, list(row["history"]), [10])[0]
    assert np.all(np.diff(row["topk_scores"]) <= 0)


def test_one_step_lowers_the_window_loss(model):
    model.train()
    windows = torch.from_numpy(training_windows([[1, 2, 3, 4, 5, 6, 7, 8]] * 4, max_len=6))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = window_loss(model, windows)
    before.backward()
    opt.step()
    assert window_loss(model, windows).item() < before.item()
    assert before.item() == pytest.approx(math.log(N_ITEMS), abs=0.15)  # near-uniform softmax at init


def test_training_on_tiny_beats_popularity():
    from recnb import data

    prepared = data.build_dataset("tiny", seed=0)
    cfg = SASRecConfig(max_len=10, hidden=32, blocks=1, heads=1, dropout=0.2, lr=5e-3, epochs=30, patience=5)
    model, log = train_sasrec(build_sasrec(prepared.items, cfg), prepared.splits, cfg, progress=False)
    result = evaluate_all(model, prepared.splits)
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    assert result["valid"]["ndcg@10"] == pytest.approx(log["valid_ndcg@10"].max())  # best epoch kept
    assert result["valid"]["ndcg@10"] > result["pop_valid"]["ndcg@10"]


def test_same_seed_gives_identical_training(splits):
    items = pd.DataFrame({col.ITEM: np.arange(1, 12), col.POPULARITY: np.ones(11, dtype=np.int64)})
    runs = []
    for other_seed in (1, 2):
        torch.manual_seed(123)
        cfg = SASRecConfig(max_len=4, hidden=8, blocks=1, heads=1, dropout=0.3, lr=1e-3, epochs=3, patience=3, seed=7)
        model = build_sasrec(items, cfg)
        torch.manual_seed(other_seed)  # must not matter: train_sasrec seeds order and dropout itself
        runs.append(train_sasrec(model, splits, cfg, progress=False))
    assert runs[0][1]["loss"].tolist() == runs[1][1]["loss"].tolist()
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()))


@pytest.mark.slow
def test_ml100k_beats_recbole_unmasked():
    """The benchmark protocol (minutes on CPU): RecBole 1.2.1's SASRec scores 0.1198 / 0.0561."""
    from recnb import data

    prepared = data.build_dataset("ml-100k")
    cfg = SASRecConfig(max_len=50, hidden=64, blocks=2, heads=2, dropout=0.2, lr=3e-3, epochs=200, patience=10)
    model, _ = train_sasrec(build_sasrec(prepared.items, cfg), prepared.splits, cfg, progress=False)
    result = evaluate_all(model, prepared.splits)["test_unmasked"]
    assert result["hr@10"] > 0.1198 and result["ndcg@10"] > 0.0561


def test_rank_form_metrics_agree_with_the_list_form_used_by_eval():
    """SASRec's vectorised HR/NDCG (0-based target ranks) equal recnb.metrics on the same rankings."""
    from recnb import metrics
    from recnb.sasrec import evaluate as sasrec_eval

    rng = np.random.default_rng(0)
    rankings = [list(rng.permutation(30) + 1) for _ in range(200)]
    targets = [int(rng.integers(1, 31)) for _ in rankings]
    ranks = np.array([r.index(t) for r, t in zip(rankings, targets)])
    for k in (5, 10):
        assert sasrec_eval.hit_rate_at_k(ranks, k) == pytest.approx(np.mean([metrics.hit_at_k(r, t, k) for r, t in zip(rankings, targets)]))
        assert sasrec_eval.ndcg_at_k(ranks, k) == pytest.approx(np.mean([metrics.ndcg_at_k(r, t, k) for r, t in zip(rankings, targets)]))
