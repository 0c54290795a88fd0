"""The paper's figures as PNGs (matplotlib, the `figures` extra): Fig. 4 (per-head
self-attention over a session), Fig. 5 (the gate and the long-term attention, users side by
side) and a run's training curves. Each function writes one file through `tf.io.gfile` and
returns its path.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.core.history_rules import HEAD_ORDERS
from sdm_tf.train.explain import UserExplanation

MAX_POSITIONS = 20  # the last positions of a session a heat map shows
MAX_BAG = 15  # the heaviest entries of a long-term bag a bar chart shows


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # an optional extra: say how to get it
        raise ImportError("figures need matplotlib: pip install 'sdm[figures]'") from e
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def item_labels(ex: UserExplanation, side: str | None) -> list[str]:
    """'item' or 'item\\nside value' per session position."""
    items = ex.session[F.ITEM]
    if side is None or side not in ex.session:
        return list(items)
    return [f"{i}\n{c}" for i, c in zip(items, ex.session[side])]


def self_attention(ex: UserExplanation, path: str, side: str | None = None) -> str:
    """Fig. 4: one heat map per head, row t = position t's weights over positions k <= t."""
    if ex.self_attention is None:
        raise ValueError("the model has no self-attention block")
    plt = _pyplot()
    start = max(0, ex.length - MAX_POSITIONS)
    weights = ex.self_attention[:, start:, start:]
    labels = item_labels(ex, side)[start:]
    heads = weights.shape[0]
    cols = min(heads, 4)
    rows = -(-heads // cols)
    size = 0.35 * len(labels) + 2
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= heads:
            ax.axis("off")
            continue
        im = ax.imshow(weights[h], cmap="viridis", vmin=0.0)
        ax.set_title(f"head {h + 1}")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"user {ex.user}: self-attention over the last {len(labels)} events")
    return _save(fig, path)


def gates(examples: Sequence[UserExplanation], path: str, feature: str = F.ITEM) -> str:
    """Fig. 5: per user (columns), the gate at the last position per dimension (top; its mean in
    the title: 1 = short-term, 0 = long-term) and the long-term attention over `feature`'s bag
    (bottom, the MAX_BAG heaviest entries)."""
    if not examples:
        raise ValueError("no users to show")
    plt = _pyplot()
    n = len(examples)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6), squeeze=False)
    for j, ex in enumerate(examples):
        top, bottom = axes[0][j], axes[1][j]
        if ex.gate is None:
            top.text(0.5, 0.5, "no gate (fusion is not 'gate')", ha="center")
            top.axis("off")
        else:
            top.bar(range(len(ex.gate)), ex.gate, width=1.0)
            top.set_ylim(0, 1)
            top.set_title(f"user {ex.user}\nmean gate {float(np.mean(ex.gate)):.2f}", fontsize=9)
            top.set_xlabel("dimension")
        values, weights = ex.long_term.get(feature, ([], np.zeros([0])))
        if len(values) == 0:
            bottom.text(0.5, 0.5, "empty long-term bag", ha="center")
            bottom.axis("off")
            continue
        order = np.argsort(-weights)[:MAX_BAG]
        bottom.barh(range(len(order)), weights[order])
        bottom.set_yticks(range(len(order)), [values[i] for i in order], fontsize=7)
        bottom.invert_yaxis()
        bottom.set_xlabel(f"long-term attention ({feature})")
    fig.suptitle("short- vs long-term: the gate and the long-term attention")
    return _save(fig, path)


def training_curves(
    curve: Sequence[Mapping[str, float]],
    path: str,
    metric: str = "HitRate@50",
    decay: tuple[int, int] | None = None,
) -> str:
    """Loss and validation `metric` (every history rule) per epoch, from validation.json's curve;
    with `decay` = (e, after), a line after epoch `after`, where training went back to epoch e's
    weights at a lower rate (the epochs after the line continue from e: a step in the loss)."""
    if not curve:
        raise ValueError("an empty curve (was the model trained with a validation split?)")
    plt = _pyplot()
    epochs = [p["epoch"] for p in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, [p["loss"] for p in curve], marker=".")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    for rule in ("excluded", "kept", *HEAD_ORDERS):
        key = f"{rule}/{metric}"
        if key in curve[0]:
            right.plot(epochs, [p[key] for p in curve], marker=".", label=f"history {rule}")
    if decay:
        for ax in (left, right):
            ax.axvline(decay[1] + 0.5, color="gray", ls=":")
        right.plot(
            [], [], color="gray", ls=":", label=f"lower rate from epoch {decay[0]}'s weights"
        )
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {metric}")
    right.legend()
    return _save(fig, path)


def write_figures(
    model_dir: str,
    data_dir: str,
    output_dir: str,
    users: Sequence[str] | None = None,
    num_users: int = 4,
    split: str = "eval",
) -> list[str]:
    """Fig. 4 for each user, Fig. 5 for the users side by side and the training curves (when
    the run has a validation curve) of the model in `model_dir`; returns the paths written."""
    from sdm_tf.train import explain, training
    from sdm_tf.train import validation as V

    model = training.restore(model_dir)
    examples = explain.explain_users(model, data_dir, users, num_users, split)
    side = next((f for f in model.tower.item_features if f != F.ITEM), None)
    tf.io.gfile.makedirs(output_dir)
    paths = []
    if model.cfg.use_self_attention:
        for ex in examples:
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in ex.user)
            paths.append(self_attention(ex, f"{output_dir}/self_attention_{name}.png", side=side))
    if model.cfg.use_long_term:
        paths.append(gates(examples, f"{output_dir}/gates.png"))
    state = V.load_state(model_dir)
    if state and state.get("curve"):
        paths.append(
            training_curves(
                state["curve"],
                f"{output_dir}/training_curves.png",
                decay=(
                    (state["decay_epoch"], state["decay_started"])
                    if state.get("decay_started")
                    else None
                ),
            )
        )
    return paths
