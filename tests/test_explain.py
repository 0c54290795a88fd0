"""What the tower weighs (Fig. 4-5) and the figures command."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.train import explain, training
from sdm_tf.train.data_dir import load_item_vocab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model(trained_model_dir):
    return training.restore(str(trained_model_dir))


def test_explain_weights_are_the_forward_pass(model, preprocessed_dir):
    (row,) = explain.query_examples(model, str(preprocessed_dir), None, 1)
    inputs = {k: tf.constant(v[np.newaxis]) for k, v in row.items() if k != F.USER_ID}
    parts = {k: v.numpy()[0] for k, v in model.tower.explain(inputs).items()}
    n = int(row[F.LENGTH])
    # The same output as the tower's call.
    np.testing.assert_allclose(parts["output"], model.tower(inputs).numpy()[0], atol=1e-5)
    # Eq. 14 from the parts: o_t = (1 - G) * p + G * s_t.
    g, s, p = parts["gate"], parts["short_term"], parts["long_term"]
    np.testing.assert_allclose(parts["output"], (1 - g) * p + g * s, atol=1e-5)
    assert ((g > 0) & (g < 1)).all()
    # Causal self-attention: row t sums to 1 over k <= t, nothing on k > t.
    sa = parts["self_attention"]
    assert sa.shape[0] == model.cfg.num_heads
    np.testing.assert_allclose(sa[:, :n, :n].sum(-1), np.ones([sa.shape[0], n]), atol=1e-5)
    assert np.abs(np.triu(sa[:, :n, :n], k=1)).max() < 1e-7
    # The user attention of the last position and each long-term bag are distributions.
    assert parts["user_attention"][n - 1, :n].sum() == pytest.approx(1.0, abs=1e-5)
    bag = row[F.long_key(F.ITEM)] != F.PAD_ID
    w = parts[f"long_term/{F.ITEM}"]
    if bag.any():
        assert w[: len(bag)][bag].sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(w[: len(bag)][~bag]).max(initial=0.0) < 1e-7


def test_users_are_chosen_by_session_length_and_decoded(model, preprocessed_dir):
    examples = explain.explain_users(model, str(preprocessed_dir), num_users=3)
    lengths = [ex.length for ex in examples]
    assert len(examples) == 3 and lengths == sorted(lengths, reverse=True)
    vocab = load_item_vocab(str(preprocessed_dir))
    for ex in examples:
        assert set(ex.session[F.ITEM]) <= set(vocab) | {F.OOV_TOKEN}
        assert ex.self_attention.shape == (model.cfg.num_heads, ex.length, ex.length)
        assert ex.gate.shape == (model.cfg.dim,)
        values, weights = ex.long_term[F.ITEM]
        assert len(values) == len(weights)
    # Asking for users by id returns them in that order.
    ids = [examples[2].user, examples[0].user]
    again = explain.explain_users(model, str(preprocessed_dir), ids)
    assert [ex.user for ex in again] == ids
    np.testing.assert_allclose(again[1].gate, examples[0].gate, atol=1e-6)


def read_png(path):
    import matplotlib.image

    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    return matplotlib.image.imread(path)


def test_figures_are_written(model, trained_model_dir, preprocessed_dir, tmp_path):
    from sdm_tf import figures

    paths = figures.write_figures(
        str(trained_model_dir), str(preprocessed_dir), str(tmp_path), num_users=2
    )
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert len(names) == 3 and "gates.png" in names  # 2 users' Fig. 4 + Fig. 5; no curve
    assert all(n.startswith("self_attention_") for n in names if n != "gates.png")
    for p in paths:
        h, w, _ = read_png(p).shape
        assert h > 100 and w > 100
    curve = [
        {"epoch": e, "loss": 5.0 / e, "excluded/HitRate@50": 0.1 * e, "kept/HitRate@50": 0.05 * e}
        for e in (1, 2, 3)
    ]
    plain = read_png(figures.training_curves(curve, str(tmp_path / "c.png")))
    assert plain.shape[0] > 100
    # The drop of the rate (back to epoch 1's weights after epoch 2) is drawn: not the same image.
    marked = read_png(figures.training_curves(curve, str(tmp_path / "m.png"), decay=(1, 2)))
    assert marked.shape == plain.shape and not np.array_equal(marked, plain)
    with pytest.raises(ValueError, match="empty curve"):
        figures.training_curves([], str(tmp_path / "d.png"))


def test_explain_command(trained_model_dir, preprocessed_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model_dir, model_dir)
    (model_dir / "validation.json").write_text(
        json.dumps({"curve": [{"epoch": 1, "loss": 3.0, "excluded/HitRate@50": 0.2}]})
    )
    out_dir = tmp_path / "figures"
    cmd = [sys.executable, "-m", "launch.explain", f"--model_dir={model_dir}",
           f"--data_dir={preprocessed_dir}", f"--output_dir={out_dir}",
           "--num_users=1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    written = sorted(p.name for p in out_dir.iterdir())
    assert len(written) == 3 and written[0] == "gates.png", written
    assert written[1].startswith("self_attention_") and written[2] == "training_curves.png"
    bad = subprocess.run([*cmd, "--user=no-such-user"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no-such-user" in bad.stderr.strip().splitlines()[-1]
