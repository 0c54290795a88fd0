"""One-off variants of the user towers, for validation probes that no config field covers.

Which part of a tower costs is a question for validation runs, and some of the parts asked about
are not settings (docs/results.md, "Session 35"). Rather than grow the config with fields no
default uses, each probe here patches one layer for the length of a run:

- gru4rec_lstm: GRU4Rec's tower with a Keras LSTM (its default initialisers) in place of the GRU;
- gru4rec_no_projection: GRU4Rec's tower without its output Dense: the GRU's state at t is the
  user vector;
- attention_pre_norm: SDM's self-attention normalises its input, not its output:
  x + MultiHead(LN(x)) in place of LN(x + MultiHead(x));
- attention_no_norm: x + MultiHead(x), no layer norm;
- lstm_glorot: SDM's stacked LSTM with Keras's default input initialiser (Glorot uniform) in place
  of the orthogonal one; the recurrent kernel stays orthogonal, as both have it.

    python benchmarks/tower_probes.py PROBE --split S --output_dir O --final_fit none [flags]

Every flag after PROBE is `launch.bench_split`'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow loads, as sdm_tf does
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from sdm_tf.model import baselines  # noqa: E402
from sdm_tf.model.layers import self_attention, stacked_lstm  # noqa: E402
from sdm_tf.model.layers.masking import causal_mask  # noqa: E402


def _gru4rec(patch: Callable[[baselines.GRU4RecTower, object], None]):
    original = baselines.GRU4RecTower.__init__

    def init(self, dataset, cfg, dims, **kwargs):
        original(self, dataset, cfg, dims, **kwargs)
        patch(self, cfg)

    return baselines.GRU4RecTower, "__init__", init


def _lstm(tower, cfg) -> None:
    tower.gru = tf.keras.layers.LSTM(cfg.dim, return_sequences=True, name="gru")


def _no_projection(tower, cfg) -> None:
    tower.out = tf.keras.layers.Activation("linear", name="user_vector")


def _attention(pre_norm: bool):
    def call(self, x, length, training=None, return_attention_scores=False):
        mask = causal_mask(length, tf.shape(x)[1])
        q = self.norm(x) if pre_norm else x
        out, scores = self.mha(
            q, q, attention_mask=mask, return_attention_scores=True, training=training
        )
        y = x + out
        return (y, scores) if return_attention_scores else y

    return self_attention.CausalSelfAttention, "call", call


def _lstm_glorot():
    original = stacked_lstm.StackedLSTM.__init__

    def init(self, units, num_layers=2, dropout=0.2, **kwargs):
        original(self, units, num_layers, dropout, **kwargs)
        self.cells = [
            tf.keras.layers.LSTM(
                units, return_sequences=True, recurrent_initializer="orthogonal", name=c.name
            )
            for c in self.cells
        ]

    return stacked_lstm.StackedLSTM, "__init__", init


PROBES = {
    "gru4rec_lstm": lambda: _gru4rec(_lstm),
    "gru4rec_no_projection": lambda: _gru4rec(_no_projection),
    "attention_pre_norm": lambda: _attention(pre_norm=True),
    "attention_no_norm": lambda: _attention(pre_norm=False),
    "lstm_glorot": _lstm_glorot,
}


@contextlib.contextmanager
def probe(name: str) -> Iterator[None]:
    """Within the block, the towers built have probe `name`'s change."""
    if name not in PROBES:
        raise ValueError(f"probe must be one of {sorted(PROBES)}, got {name!r}")
    owner, attr, value = PROBES[name]()
    original = owner.__dict__[attr]
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in PROBES:
        sys.exit(f"usage: tower_probes.py {{{','.join(PROBES)}}} [bench_split flags]")
    name = sys.argv.pop(1)
    from launch import bench_split

    with probe(name):
        bench_split.entry()


if __name__ == "__main__":
    main()
