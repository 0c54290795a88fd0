"""The item table's starting point: a factorisation of the training split's co-occurrences.

A randomly initialised item table learns an item only from the batches that hold it, so rare
items start, and often stay, near noise. Here every item starts from its neighbourhood in the
training sequences instead, as item-CF sees it: the pairs (input item, one of the next N items)
of every training record are counted both ways, turned into positive pointwise mutual
information (PPMI), and factorised by a randomised truncated SVD (Halko et al., 2011). Item c's
row is U_c · sqrt(S), rescaled to the spread of the random initialiser it replaces, so Adam's
steps mean the same; items in no pair keep their random rows. Then training goes on as before.

Chosen on validation splits only (docs/results.md, "Session 33: the item table starts from the
training split's co-occurrences").
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from sdm_tf.core import features as F
from sdm_tf.train.input import InputReader

_COMPACT_EVERY = 1 << 24  # pair keys held before they are merged into counts
# Above this many items the table keeps its random start (with a warning): the SVD holds a few
# dense [items, dim + 16] float32 matrices in the chief's memory (~0.6 GB each at 10^6 items).
MAX_ITEMS = 1_000_000


def _merge(
    keys: np.ndarray, counts: np.ndarray, pending: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Counts so far (unique keys) plus the pending keys, one count each."""
    new = np.concatenate(pending)
    unique, inverse = np.unique(np.concatenate([keys, new]), return_inverse=True)
    return unique, np.bincount(inverse, weights=np.concatenate([counts, np.ones(new.size)]))


def count_pairs(batches, num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric co-occurrence counts of class ids from training batches.

    batches: dicts with `short_item` [B, L] and `label_next_n` [B, L, N] (item ids; ids below
    NUM_RESERVED are padding or out of vocabulary and count for nothing). An item paired with
    itself (a repeat) is not counted. -> (rows, cols, counts), each pair both ways."""
    keys, counts = np.zeros(0, np.int64), np.zeros(0, np.float64)
    pending: list[np.ndarray] = []
    held = 0
    for batch in batches:
        a = np.asarray(batch[F.short_key(F.ITEM)], np.int64)[..., np.newaxis]
        b = np.asarray(batch[F.LABEL_NEXT_N], np.int64)
        a = np.broadcast_to(a, b.shape)
        ok = (a >= F.NUM_RESERVED) & (b >= F.NUM_RESERVED) & (a != b)
        a, b = a[ok] - F.NUM_RESERVED, b[ok] - F.NUM_RESERVED
        if a.size and max(a.max(), b.max()) >= num_items:
            raise ValueError(f"an item id beyond the vocabulary of {num_items} items")
        pending += [a * num_items + b, b * num_items + a]
        held += 2 * a.size
        if held >= _COMPACT_EVERY:
            keys, counts = _merge(keys, counts, pending)
            pending, held = [], 0
    if pending:
        keys, counts = _merge(keys, counts, pending)
    return keys // num_items, keys % num_items, counts


def ppmi(rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """max(0, log(c_ij · T / (r_i · r_j))) for each stored pair; T = Σ c, r_i = Σ_j c_ij.

    On `count_pairs`' counts (symmetric, no diagonal) every item with a pair keeps a positive
    value, so no such item gets a zero row: pmi_ij <= 0 for all j would sum to
    r_i · T <= r_i · Σ_{j ~ i} r_j, yet Σ_{j ~ i} r_j <= T - r_i."""
    total = counts.sum()
    marginal = np.bincount(
        rows, weights=counts, minlength=int(max(rows.max(initial=0), cols.max(initial=0))) + 1
    )
    pmi = np.log(counts * total / (marginal[rows] * marginal[cols]))
    return np.maximum(pmi, 0.0)


def truncated_svd(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    size: int,
    rank: int,
    seed: int = 0,
    oversample: int = 16,
    power_iterations: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The top `rank` singular triplets of the sparse symmetric [size, size] matrix given as
    (rows, cols, values), by a randomised range finder with power iterations. -> (U [size, r],
    S [r]), r = min(rank, size)."""
    order = np.lexsort((cols, rows))
    matrix = tf.sparse.SparseTensor(
        np.stack([rows[order], cols[order]], axis=1).astype(np.int64),
        values[order].astype(np.float32),
        [size, size],
    )
    k = min(size, rank + oversample)
    omega = tf.random.stateless_normal([size, k], seed=[seed, 0])
    y = tf.sparse.sparse_dense_matmul(matrix, omega)
    for _ in range(power_iterations):  # (M Mᵀ)^q M Ω: the spectrum's head stands out
        q, _ = tf.linalg.qr(y)
        y = tf.sparse.sparse_dense_matmul(
            matrix, tf.sparse.sparse_dense_matmul(matrix, q, adjoint_a=True)
        )
    q, _ = tf.linalg.qr(y)
    b = tf.transpose(tf.sparse.sparse_dense_matmul(matrix, q, adjoint_a=True))  # Qᵀ M: [k, n]
    s, u_b, _ = tf.linalg.svd(b)
    r = min(rank, size)
    return (q @ u_b[:, :r]).numpy(), s[:r].numpy()


def embeddings(
    rows: np.ndarray,
    cols: np.ndarray,
    counts: np.ndarray,
    num_items: int,
    dim: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """PPMI-SVD item vectors. -> ([num_items, dim] with the spread of N(0, dim^-1) per entry
    over the items that have pairs, the [num_items] bool mask of those items)."""
    has_pairs = np.zeros(num_items, bool)
    has_pairs[rows] = True
    vectors = np.zeros((num_items, dim), np.float32)
    if not has_pairs.any():
        return vectors, has_pairs
    values = ppmi(rows, cols, counts)
    u, s = truncated_svd(rows, cols, values, num_items, dim, seed)
    e = u * np.sqrt(s)
    spread = e[has_pairs].std()
    if spread > 0:
        vectors[:, : e.shape[1]] = e * (dim**-0.5 / spread)
    return vectors, has_pairs


def pairs_of_split(
    data_dir: str, split: str, spec: F.DatasetSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count_pairs` over every training record of `data_dir/split` (one pass, file order)."""
    reader = InputReader(
        pattern=os.path.join(data_dir, split, "*.tfrecord.gz"),
        spec=F.FeatureSpec(spec),
        kind=F.TRAIN,
        batch_size=1024,
        training=False,
    )
    keys = [F.short_key(F.ITEM), F.LABEL_NEXT_N]
    batches = ({k: b[k].numpy() for k in keys} for b in reader())
    return count_pairs(batches, spec.num_items)


def initialise_item_table(model, data_dir: str, split: str, seed: int = 0) -> dict:
    """Writes the PPMI-SVD vectors of `data_dir/split` into the model's item table (and the
    untied output table, where there is one); rows of items without pairs keep their values.
    Returns what it did, for the log and the run's summary."""
    start = time.perf_counter()
    spec = model.dataset
    if spec.num_items > MAX_ITEMS:
        logging.warning(
            "item table: %d items > %d, kept the random start (train.item_init=random "
            "silences this)",
            spec.num_items,
            MAX_ITEMS,
        )
        return {"items_initialised": 0, "items": int(spec.num_items), "skipped": "too many"}
    rows, cols, counts = pairs_of_split(data_dir, split, spec)
    table = model.tower.embeddings.tables[F.ITEM]
    dim = int(table.shape[1])
    vectors, has_pairs = embeddings(rows, cols, counts, spec.num_items, dim, seed)
    targets = [(table, F.NUM_RESERVED)]
    if not model.cfg.tied_output and model.output_embeddings.shape[1] == dim:
        targets.append((model.output_embeddings, 0))
    for variable, offset in targets:
        current = tf.convert_to_tensor(variable).numpy()
        current[offset:][has_pairs] = vectors[has_pairs]  # a view: writes into `current`
        variable.assign(current)
    summary = {
        "items_initialised": int(has_pairs.sum()),
        "items": int(spec.num_items),
        "pairs": int(counts.sum()),
        "seconds": round(time.perf_counter() - start, 2),
    }
    logging.info("item table from co-occurrences (PPMI-SVD): %s", summary)
    return summary
