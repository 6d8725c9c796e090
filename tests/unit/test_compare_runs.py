"""studies/compare_runs.py: one model of two runs, paired over the same users."""

import pandas as pd
import pytest

from tests.scripts import load_script

study = load_script("studies/compare_runs.py")


def _scores(model, tcp_plus, tcp_plus_twin, users=range(10), hits=None):
    """Stage-06 score rows of one model: I0 (a hit for the users in `hits`), I1+C and its twin."""
    rows = []
    for u in users:
        base = {"model": model, "user_id": u, "matcher": "fuzzy", "cpa": None, "correct_count": 1, "repeat": 0,
                "non_exist": 0, "in_history": 0, "n_items": 10, "hit5": 0.0, "ndcg5": 0.0}
        hit = float(u in (hits or ()))
        rows.append({**base, "test_group": "I0", "hit": hit, "ndcg": hit, "tcp": None})
        rows.append({**base, "test_group": "I1+C", "hit": 0.0, "ndcg": 0.0, "tcp": tcp_plus(u)})
        rows.append({**base, "test_group": "I1+C_nocontrol", "hit": 0.0, "ndcg": 0.0, "tcp": tcp_plus_twin(u)})
    return pd.DataFrame(rows)


def test_runs_are_compared_user_by_user_with_the_control_effect_of_each():
    # run a: every list all in C with the sentence, half without; run b: 0.3 everywhere
    a = _scores("v2", lambda u: 1.0, lambda u: 0.5, hits={0, 1})
    b = _scores("v2", lambda u: 0.3, lambda u: 0.3)
    other = _scores("SmolLM2", lambda u: 0.0, lambda u: 0.0)
    frame = study.joined({"a": pd.concat([a, other]), "b": b}, "v2", "fuzzy")
    assert sorted(frame["model"].unique()) == ["a", "b"]  # the other model is left out
    table = study.compare(frame, "a", "b", "fuzzy", n_resamples=200).set_index(["test_group", "figure"])
    plus = table.loc[("I1+C", "tcp_pct")]
    assert list(plus[["a", "b", "delta"]]) == pytest.approx([100.0, 30.0, 70.0])
    assert plus["delta_lo"] == pytest.approx(70.0) and plus["delta_hi"] == pytest.approx(70.0)  # no spread: same for all
    twin = table.loc[("I1+C_nocontrol", "tcp_pct")]
    assert twin["delta"] == pytest.approx(20.0)
    hr = table.loc[("I0", "hr")]
    assert list(hr[["a", "b"]]) == pytest.approx([0.2, 0.0]) and 0.0 <= hr["delta_lo"] < 0.2 < hr["delta_hi"] <= 0.5
    effects = study.control_effects(frame, ["a", "b"], "fuzzy").set_index("model")
    assert effects.loc["a", "delta"] == pytest.approx(50.0) and effects.loc["b", "delta"] == pytest.approx(0.0)


def test_runs_that_asked_other_users_or_lack_the_model_are_refused():
    a = _scores("v2", lambda u: 1.0, lambda u: 0.5)
    with pytest.raises(ValueError, match="'I0' asks other users in a and b"):
        study.joined({"a": a, "b": _scores("v2", lambda u: 1.0, lambda u: 0.5, users=range(1, 11))}, "v2", "fuzzy")
    with pytest.raises(ValueError, match="run 'b' has no fuzzy scores for model 'v2'; its models: \\['full'\\]"):
        study.joined({"a": a, "b": _scores("full", lambda u: 1.0, lambda u: 0.5)}, "v2", "fuzzy")
