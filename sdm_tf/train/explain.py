"""What a trained tower weighs for given users: the data behind the paper's Fig. 4 and 5.

`explain_users` reads the users' query examples from a preprocessed split, runs
`UserTower.explain` on them and returns the weights with the ids decoded back to raw values,
ready for `sdm_tf.figures`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.core.errors import InputError
from sdm_tf.model.sdm import SDM
from sdm_tf.train import data_dir as data_dir_lib
from sdm_tf.train import predict


@dataclasses.dataclass
class UserExplanation:
    """One user's query, with the weights the tower put on it (ids decoded to raw values).

    session: {feature: [T] raw values} of the short-term sequence, oldest first;
    self_attention: [H, T, T] (row t: position t's weights over positions k <= t), or None;
    user_attention: [T] the weights of the last position over the session (eq. 10), or None;
    long_term: {feature: ([S] raw values, [S] weights)} over each long-term bag (eq. 11);
    gate: [d] the gate at the last position (1: short-term, 0: long-term), or None.
    """

    user: str
    session: dict[str, list[str]]
    self_attention: np.ndarray | None
    user_attention: np.ndarray | None
    long_term: dict[str, tuple[list[str], np.ndarray]]
    gate: np.ndarray | None

    @property
    def length(self) -> int:
        return len(self.session[F.ITEM])


def read_vocabs(data_dir: str, features: Sequence[str]) -> dict[str, list[str]]:
    """{feature: raw values by id}: id i is vocabulary line i - NUM_RESERVED."""
    return {f: [F.PAD_TOKEN, F.OOV_TOKEN, *data_dir_lib.load_vocab(data_dir, f)] for f in features}


def query_examples(
    model: SDM, data_dir: str, users: Sequence[str] | None, num_users: int, split: str = F.EVAL
) -> list[dict[str, np.ndarray]]:
    """The query examples (one row each, model inputs + user id) of `users`, in that order; or,
    without users, the `num_users` with the longest sessions and long-term bags (ties by id)."""
    keys = [*F.FeatureSpec(model.dataset).model_input_keys(), F.USER_ID]
    rows: dict[str, dict[str, np.ndarray]] = {}
    for batch in predict.eval_batches(data_dir, model.dataset, split=split):
        batch = {k: batch[k].numpy() for k in keys}
        for i, u in enumerate(batch[F.USER_ID]):
            u = u.decode()
            if users is None or u in users:
                rows[u] = {k: v[i] for k, v in batch.items()}
    if users is not None:
        missing = [u for u in users if u not in rows]
        if missing:
            raise InputError(f"no {split} example for users {missing[:5]} in {data_dir}")
        return [rows[u] for u in users]

    def richness(u):
        long_items = rows[u][F.long_key(F.ITEM)]
        return (-int(rows[u][F.LENGTH]), -int(np.sum(long_items != F.PAD_ID)), u)

    return [rows[u] for u in sorted(rows, key=richness)[:num_users]]


def explain_users(
    model: SDM,
    data_dir: str,
    users: Sequence[str] | None = None,
    num_users: int = 4,
    split: str = F.EVAL,
) -> list[UserExplanation]:
    """The weights of the tower for each user's query example in `split`
    (see `UserTower.explain`)."""
    if model.cfg.kind != "sdm":
        raise InputError(f"only SDM towers can be explained (model kind {model.cfg.kind!r})")
    features = list(model.tower.item_features)
    vocabs = read_vocabs(data_dir, features)
    out = []
    for row in query_examples(model, data_dir, users, num_users, split):
        n = int(row[F.LENGTH])
        inputs = {k: tf.constant(v[np.newaxis]) for k, v in row.items() if k != F.USER_ID}
        parts = {k: v.numpy()[0] for k, v in model.tower.explain(inputs).items()}
        session = {f: [vocabs[f][i] for i in row[F.short_key(f)][:n]] for f in features}
        long_term = {}
        for f in features:
            ids = row[F.long_key(f)]
            keep = ids != F.PAD_ID
            if f"long_term/{f}" in parts:
                weights = parts[f"long_term/{f}"][: len(ids)][keep]
                long_term[f] = ([vocabs[f][i] for i in ids[keep]], weights)
        sa = parts.get("self_attention")
        ua = parts.get("user_attention")
        gate = parts.get("gate")
        out.append(
            UserExplanation(
                user=row[F.USER_ID].decode(),
                session=session,
                self_attention=None if sa is None else sa[:, :n, :n],
                user_attention=None if ua is None else ua[n - 1, :n],
                long_term=long_term,
                gate=None if gate is None else gate[n - 1],
            )
        )
    return out
