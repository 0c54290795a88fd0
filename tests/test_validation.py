"""Model selection on a validation split: both history rules, best epoch, early stop, resume."""

import json

import numpy as np
import pytest

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.train import predict, training
from sdm_tf.train import validation as V
from sdm_tf.train.data_dir import load_item_vocab
from tests.conftest import IN_MEMORY


@pytest.fixture(scope="module")
def split_dir(synthetic_dir, tmp_path_factory):
    """The synthetic log as a leave-one-out split: validation in eval/, test queries in test/."""
    import csv

    from pipelines import preprocess

    columns = ["user_id", "item_id", "category", "behavior", "timestamp"]  # Taobao layout
    rows = [dict(zip(columns, r)) for r in csv.reader(open(synthetic_dir / "events.csv"))]
    per_user: dict = {}
    for r in rows:
        per_user.setdefault(r["user_id"], []).append(r)
    out = tmp_path_factory.mktemp("split")
    train, queries, truth = [], [], []
    for user, evs in per_user.items():
        evs.sort(key=lambda r: int(r["timestamp"]))
        train += evs[:-1]
        if len(evs) >= 3:
            queries += evs[:-1]
            truth.append({"user_id": user, "items": [evs[-1]["item_id"]]})
    for name, part in (("train.csv", train), ("queries.csv", queries)):
        with open(out / name, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(part)
    (out / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    data = out / "data"
    preprocess.run(
        [f"--input={out / 'train.csv'}", "--format=csv", "--eval_protocol=loo",
         f"--test_queries={out / 'queries.csv'}", f"--test_truth={out / 'truth.jsonl'}",
         f"--output_dir={data}", "--min_item_count=1", "--num_shards=1", *IN_MEMORY]
    )  # fmt: skip
    return data


def smoke(*overrides):
    return C.get_config("smoke", "PSDMMAL", ["train.steps_per_epoch=10", *overrides])


def test_the_data_has_a_validation_split(split_dir, preprocessed_dir):
    assert V.has_validation(str(split_dir))
    assert not V.has_validation(str(preprocessed_dir))  # eval/ there is the test protocol's


def test_validation_keeps_the_best_epoch_and_stops_early(split_dir, tmp_path):
    cfg = smoke("train.epochs=6", "train.patience=2", "train.decay_factor=0")
    result = training.train(cfg, str(split_dir), str(tmp_path), verbose=0)
    state = result["validation"]
    curve = state["curve"]
    assert [p["epoch"] for p in curve] == list(range(1, len(curve) + 1))
    scores = [max(p[f"{r}/NDCG@50"] for r in V.MODEL_RULES) for p in curve]
    best = int(np.argmax(scores))
    assert state["best_epoch"] == best + 1 and state["best"] == pytest.approx(scores[best])
    assert state["rule"] in V.RULES
    if len(curve) < 6:  # stopped: the last `patience` epochs did not improve
        assert state["stopped_early"] and len(curve) - state["best_epoch"] == 2
    # The model in hand, and the one restore() loads, are the best epoch's: same scores.
    for model in (result["model"], training.restore(str(tmp_path))):
        again = V.validate(model, str(split_dir), (50,))
        assert max(again[r]["NDCG@50"] for r in V.MODEL_RULES) == pytest.approx(state["best"])
        assert max(V.RULES, key=lambda r: again[r]["NDCG@50"]) == state["rule"]


def test_fit_schedule_replays_the_epochs_to_the_best_weights():
    assert V.fit_schedule({"best_epoch": 7}) == (7, 0)  # no decay
    # Decay started after epoch 6 from epoch 3's weights, best epoch before it: 3 epochs.
    assert V.fit_schedule({"best_epoch": 3, "decay_epoch": 3, "decay_started": 6}) == (3, 0)
    # Best 2 epochs into the decayed phase: 3 epochs at the rate, then 2 decayed.
    assert V.fit_schedule({"best_epoch": 8, "decay_epoch": 3, "decay_started": 6}) == (5, 3)
    assert V.decayed_epochs({"best_epoch": 8, "decay_epoch": 3, "decay_started": 6}) == 2
    assert V.decayed_epochs({"best_epoch": 3, "decay_epoch": 3, "decay_started": 6}) == 0
    assert V.decayed_epochs({"best_epoch": 7}) == 0


def test_the_rate_decays_from_the_best_weights_then_stops(split_dir, tmp_path, monkeypatch):
    """Scripted validation scores: best at epoch 2, two epochs without improvement (patience 2)
    send the model back to epoch 2's weights at a tenth of the rate; epoch 5 improves; two more
    without improvement (decay_patience 2) stop it after epoch 7."""
    scores = iter([0.10, 0.30, 0.20, 0.20, 0.35, 0.30, 0.30, 0.99, 0.99])
    seen = []  # (learning rate, weights) at each validation

    def scripted(model, data_dir, ks, batches=None):
        weights = [v.numpy().copy() for v in model.trainable_variables]
        seen.append((float(model.optimizer.learning_rate.numpy()), weights))
        value = next(scores)
        return {r: {"NDCG@50": value - 0.01 * (r == "kept"), "users": 1} for r in V.RULES}

    restored = []
    decay = V.RetrievalValidation._decay

    def spy(self, epoch):
        decay(self, epoch)
        restored.append([v.numpy().copy() for v in self.model.trainable_variables])

    monkeypatch.setattr(V, "validate", scripted)
    monkeypatch.setattr(V.RetrievalValidation, "_decay", spy)
    cfg = smoke(
        "train.epochs=20", "train.patience=2", "train.decay_patience=2", "train.decay_factor=0.1"
    )
    state = training.train(cfg, str(split_dir), str(tmp_path), verbose=0)["validation"]
    assert len(state["curve"]) == 7 and state["stopped_early"]
    assert (state["best_epoch"], state["decay_epoch"], state["decay_started"]) == (5, 2, 4)
    assert state["rule"] == "excluded" and state["best"] == pytest.approx(0.35)
    assert [lr for lr, _ in seen] == pytest.approx([1e-3] * 4 + [1e-4] * 3)
    assert len(restored) == 1  # one decay, back to epoch 2's weights
    for back, at_two in zip(restored[0], seen[1][1]):
        np.testing.assert_array_equal(back, at_two)
    assert any(not np.array_equal(a, b) for a, b in zip(seen[1][1], seen[3][1]))
    assert V.fit_schedule(state) == (3, 2)
    # The drop's starting point is kept for a warm final fit: epoch 2's weights.
    model = training.build_model(training.load_dataset_spec(str(split_dir)), cfg)
    model.optimizer.build(model.trainable_variables)
    assert V.restore_best(model, str(tmp_path), optimizer=True, which=V.DROP_DIR)
    for got, at_two in zip(model.trainable_variables, seen[1][1]):
        np.testing.assert_array_equal(got.numpy(), at_two)
    assert V.decayed_epochs(state) == 1


def test_the_final_fit_decays_the_rate_at_decay_epoch(split_dir, tmp_path):
    cfg = smoke("train.epochs=3", "train.decay_epoch=2", "train.decay_factor=0.1")
    result = training.train(cfg, str(split_dir), str(tmp_path), verbose=0, validate=False)
    assert result["history"]["learning_rate"] == pytest.approx([1e-3, 1e-3, 1e-4])


def test_resume_starts_from_the_best_weights_and_optimizer_state(split_dir, tmp_path, monkeypatch):
    """Scripted scores make epoch 2 of 3 the best: a resumed fit starts from its weights and
    Adam state (10 steps an epoch: the step count goes on from 20) at the rate it is given."""
    scores = iter([0.1, 0.3, 0.2])
    at_best = {}

    def scripted(model, data_dir, ks, batches=None):
        value = next(scores)
        if value == 0.3:
            at_best["weights"] = [v.numpy().copy() for v in model.trainable_variables]
            at_best["moments"] = [v.numpy().copy() for v in model.optimizer.variables[1:]]
        return {r: {"NDCG@50": value, "users": 1} for r in V.RULES}

    monkeypatch.setattr(V, "validate", scripted)
    first = tmp_path / "first"
    training.train(
        smoke("train.epochs=3", "train.patience=5"), str(split_dir), str(first), verbose=0
    )
    model = training.build_model(training.load_dataset_spec(str(split_dir)), smoke())
    model.optimizer.build(model.trainable_variables)
    assert V.restore_best(model, str(first), optimizer=True)
    assert int(model.optimizer.iterations.numpy()) == 20
    for got, want in zip(model.trainable_variables, at_best["weights"]):
        np.testing.assert_array_equal(got.numpy(), want)
    assert any(np.abs(m).sum() > 0 for m in at_best["moments"])
    for got, want in zip(model.optimizer.variables[1:], at_best["moments"]):
        np.testing.assert_array_equal(got.numpy(), want)
    cfg = smoke("train.epochs=1", "train.learning_rate=0.0001")
    result = training.train(
        cfg, str(split_dir), str(tmp_path / "resumed"), verbose=0, validate=False,
        init_from=str(first), init_optimizer=True,
    )  # fmt: skip
    assert result["optimizer_steps"] == 30
    # The checkpoint was written at 1e-3; the resumed fit runs at its own rate.
    assert float(result["model"].optimizer.learning_rate.numpy()) == pytest.approx(1e-4)


def test_epochs_are_chosen_on_the_model_and_the_rule_at_the_best_epoch(
    split_dir, tmp_path, monkeypatch
):
    """Under "first" a long history fills the list whatever the epoch: a flat .9 must not pick
    epoch 1. The excluded ranking peaks at epoch 3, and there "first" scores highest."""
    scores = iter([0.10, 0.20, 0.30, 0.25, 0.25, 0.25])

    def scripted(model, data_dir, ks, batches=None):
        value = next(scores)
        heads = {"first": {"NDCG@50": 0.9}, "frequent": {"NDCG@50": 0.8}}
        return {"kept": {"NDCG@50": 0.0}, "excluded": {"NDCG@50": value}, **heads}

    monkeypatch.setattr(V, "validate", scripted)
    cfg = smoke("train.epochs=6", "train.patience=3", "train.decay_factor=1")
    state = training.train(cfg, str(split_dir), str(tmp_path), verbose=0)["validation"]
    assert (state["best_epoch"], state["rule"]) == (3, "first")
    assert state["best"] == pytest.approx(0.30) and state["curve"][0]["first/NDCG@50"] == 0.9


def test_excluded_rule_never_returns_history(split_dir, tmp_path):
    training.train(smoke("train.epochs=1"), str(split_dir), str(tmp_path), verbose=0)
    model = training.restore(str(tmp_path))
    users, _, _, history = predict.user_vectors(model, str(split_dir), split=F.TEST)
    _, pred, _ = predict.evaluate(model, str(split_dir), [20], exclude_seen=True, split=F.TEST)
    assert len(pred) == len(users) and any(history)
    for user, items in zip(users, history):
        assert len(pred[user]) == 20 and not set(pred[user]) & set(items)


def test_first_rule_puts_the_history_ahead_of_the_excluded_ranking(split_dir, tmp_path):
    training.train(smoke("train.epochs=1"), str(split_dir), str(tmp_path), verbose=0)
    model = training.restore(str(tmp_path))
    vocab = load_item_vocab(str(split_dir))
    vecs = np.random.default_rng(0).normal(size=[2, model.cfg.dim]).astype(np.float32)
    # In time order; "nope" is no catalogue item (listed all the same: the history is the
    # user's); user 2 saw v[5] twice, then v[4], then v[6] once.
    history = [[vocab[3], "nope", vocab[7]], [vocab[5], vocab[4], vocab[5], vocab[6]]]
    out = predict.rank_rules(model, vocab, vecs, history, k=6)
    assert set(out) == {"kept", "excluded", "first", "frequent"}
    assert out["first"][0] == [vocab[7], "nope", vocab[3], *out["excluded"][0][:3]]
    assert out["frequent"][0] == out["first"][0]  # each item once: recency decides
    assert out["first"][1] == [vocab[6], vocab[5], vocab[4], *out["excluded"][1][:3]]
    assert out["frequent"][1] == [vocab[5], vocab[6], vocab[4], *out["excluded"][1][:3]]
    assert predict.evaluate(model, str(split_dir), [6], history_rule="first")[1]


def test_rank_ends_early_when_too_few_items_remain(split_dir, tmp_path):
    training.train(smoke("train.epochs=1"), str(split_dir), str(tmp_path), verbose=0)
    model = training.restore(str(tmp_path))
    vocab = load_item_vocab(str(split_dir))
    vecs = np.zeros([1, model.cfg.dim], np.float32)
    ranked = predict.rank_rules(model, vocab, vecs, [vocab[2:]], k=10, kept=False)["excluded"]
    assert sorted(ranked[0]) == sorted(vocab[:2])
