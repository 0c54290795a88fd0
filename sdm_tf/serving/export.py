"""Export: a SavedModel user tower on raw string ids, the item embeddings, and a manifest.

Layout of an export (`EXPORT_BASE/<version>/`; manifest.json is written last and marks it
complete, on local disks and object stores alike):

  saved_model/          serving_default: raw ids (UTF-8 strings, "" = padding) + length ->
                        user_vector; ids: the same inputs -> the vocabulary ids
  item_embeddings.npy   [num_items, d] float32, row c = the item of class c
  item_bias.npy         [num_items] float32, the softmax bias (score = u . v_c + b_c)
  item_ids.txt          raw item id of each row (descending training frequency)
  items.tsv             side values of each item (from the pipeline)
  dataset_spec.json     features, vocabulary sizes, session rules
  config.json           the experiment config
  manifest.json         dims, vocabulary hash, preset, creation time, sha256 of every file

`load` verifies the manifest's checksums before it returns anything.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import time
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.model.sdm import SDM

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def read_vocab(data_dir: str, feature: str) -> list[str]:
    with tf.io.gfile.GFile(os.path.join(data_dir, "vocab", f"{feature}.tsv")) as f:
        return [line.split("\t", 1)[0] for line in f.read().splitlines()]


class ServingTower(tf.Module):
    """Raw string ids -> user vector; vocabulary lookups inside, unknown ids -> OOV.

    Each StringLookup maps "" to 0 (padding), unknown values to 1 (OOV) and the vocabulary to
    2, 3, ...: the same ids the pipeline writes.
    """

    def __init__(self, model: SDM, vocabs: Mapping[str, list[str]]):
        super().__init__(name="serving_tower")
        self.model = model
        self.spec = F.FeatureSpec(model.dataset)
        self.lookups = {
            name: tf.keras.layers.StringLookup(
                vocabulary=list(vocab), mask_token=F.PAD_TOKEN, num_oov_indices=1
            )
            for name, vocab in vocabs.items()
        }
        # The network runs XLA-compiled on fixed shapes (batch padded to a power of two, the
        # sequence to max_session_length, bags to long_term_size): a few compiled programs
        # instead of one per request shape (measured on a 2-core CPU: the network ~3x faster,
        # the whole signature ~1.6x). Longer inputs take the plain path.
        self.compiled = tf.function(self._network, jit_compile=True)
        self.serve = tf.function(self._serve, input_signature=[self.spec.serving_signature()])
        # The ids the network sees for raw inputs: for parity checks against the pipeline.
        self.lookup = tf.function(self.ids, input_signature=[self.spec.serving_signature()])

    def ids(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        d = self.model.dataset
        out = {F.LENGTH: tf.cast(inputs[F.LENGTH], tf.int64)}
        for f in d.item_features:
            for key in (F.short_key(f), F.long_key(f)):
                out[key] = self.lookups[f](inputs[key])
        for p in d.profile_features:
            out[F.profile_key(p)] = self.lookups[p](inputs[F.profile_key(p)])
        return out

    def _network(self, ids):
        return self.model(ids, training=False)

    def _width(self, key: str) -> int:
        d = self.model.dataset
        return d.max_session_length if key.startswith("short_") else d.long_term_size

    def _pad(self, ids):
        batch = tf.shape(ids[F.LENGTH])[0]
        rows = tf.cast(
            2 ** tf.math.ceil(tf.math.log(tf.cast(batch, tf.float32)) / tf.math.log(2.0)), tf.int32
        )
        rows = tf.maximum(rows, batch)  # guards the float rounding
        out = {}
        for key, t in ids.items():
            if t.shape.rank == 1:
                out[key] = tf.pad(t, [[0, rows - batch]])
            else:
                width = self._width(key)
                out[key] = tf.pad(t, [[0, rows - batch], [0, width - tf.shape(t)[1]]])
                out[key].set_shape([None, width])
        return out

    def _fits(self, ids):
        ok = tf.constant(True)
        for key, t in ids.items():
            if t.shape.rank == 2:
                ok = tf.logical_and(ok, tf.shape(t)[1] <= self._width(key))
        return ok

    def _serve(self, inputs):
        ids = self.ids(inputs)
        batch = tf.shape(ids[F.LENGTH])[0]
        vectors = tf.cond(
            self._fits(ids),
            lambda: self.compiled(self._pad(ids))[:batch],
            lambda: self._network(ids),
        )
        return {"user_vector": vectors}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in tf.io.gfile.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def _write_npy(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())


def _read_npy(path: str) -> np.ndarray:
    with tf.io.gfile.GFile(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def export(model: SDM, cfg: C.ExperimentConfig, data_dir: str, export_base: str) -> str:
    """Writes a new version under `export_base`; returns its path.

    Works on any tf.io.gfile filesystem (local, gs://, ram://). Publishing is a completion
    marker, not a rename (a directory rename is a copy on object stores): manifest.json, with
    every file's sha256, is written last, and `latest` / `Export` only take a version that has
    one. A failed export removes what it wrote.
    """
    spec = model.dataset
    vocabs = {f: read_vocab(data_dir, f) for f in (*spec.item_features, *spec.profile_features)}
    for f, vocab in vocabs.items():
        if len(vocab) + F.NUM_RESERVED != spec.vocab_sizes[f]:
            raise ValueError(
                f"vocabulary {f} has {len(vocab)} values, the model expects "
                f"{spec.vocab_sizes[f] - F.NUM_RESERVED}"
            )
    version = str(int(time.time() * 1000))
    final = os.path.join(export_base, version)
    while tf.io.gfile.exists(final):  # two exports in the same millisecond
        version = str(int(version) + 1)
        final = os.path.join(export_base, version)
    tf.io.gfile.makedirs(final)
    try:
        tower = ServingTower(model, vocabs)
        tf.saved_model.save(
            tower,
            os.path.join(final, "saved_model"),
            signatures={
                "serving_default": tower.serve.get_concrete_function(),
                "ids": tower.lookup.get_concrete_function(),
            },
        )
        _write_npy(
            os.path.join(final, "item_embeddings.npy"),
            model.item_table.numpy().astype(np.float32),
        )
        _write_npy(
            os.path.join(final, "item_bias.npy"), model.output_bias.numpy().astype(np.float32)
        )
        with tf.io.gfile.GFile(os.path.join(final, "item_ids.txt"), "w") as f:
            f.write("".join(i + "\n" for i in vocabs[F.ITEM]))
        tf.io.gfile.copy(os.path.join(data_dir, "items.tsv"), os.path.join(final, "items.tsv"))
        with tf.io.gfile.GFile(os.path.join(final, "dataset_spec.json"), "w") as f:
            f.write(spec.to_json())
        with tf.io.gfile.GFile(os.path.join(final, "config.json"), "w") as f:
            f.write(cfg.to_json())
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created": datetime.datetime.now(datetime.UTC).isoformat(),
            "dim": int(model.cfg.dim),
            "num_items": int(model.num_classes),
            "preset": cfg.preset,
            "variant": cfg.variant,
            "vocab_sha256": _sha256(os.path.join(final, "item_ids.txt")),
            "files": {rel: _sha256(os.path.join(final, rel)) for rel in _files(final)},
        }
        with tf.io.gfile.GFile(os.path.join(final, MANIFEST), "w") as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True))
    except BaseException:
        if tf.io.gfile.exists(final):
            tf.io.gfile.rmtree(final)
        raise
    return final


def latest(export_base: str) -> str:
    """The newest complete version under `export_base`: one whose manifest.json exists."""
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(export_base)]
    versions = sorted((v for v in versions if v.isdigit()), key=int, reverse=True)
    for v in versions:
        if tf.io.gfile.exists(os.path.join(export_base, v, MANIFEST)):
            return os.path.join(export_base, v)
    raise FileNotFoundError(f"no complete export under {export_base}")


class Export:
    """A verified, loaded export."""

    def __init__(self, path: str, verify: bool = True):
        if not tf.io.gfile.exists(os.path.join(path, MANIFEST)) and tf.io.gfile.isdir(path):
            path = latest(path)
        self.path = path
        with tf.io.gfile.GFile(os.path.join(path, MANIFEST)) as f:
            self.manifest = json.load(f)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported export format {self.manifest.get('format_version')}")
        if verify:
            for rel, digest in self.manifest["files"].items():
                full = os.path.join(path, rel)
                if not tf.io.gfile.exists(full):
                    raise ValueError(f"export {path} is missing {rel}")
                if _sha256(full) != digest:
                    raise ValueError(f"export {path}: checksum mismatch for {rel}")
        with tf.io.gfile.GFile(os.path.join(path, "dataset_spec.json")) as f:
            self.dataset = F.DatasetSpec.from_json(f.read())
        self.item_embeddings = _read_npy(os.path.join(path, "item_embeddings.npy"))
        self.item_bias = _read_npy(os.path.join(path, "item_bias.npy"))
        with tf.io.gfile.GFile(os.path.join(path, "item_ids.txt")) as f:
            self.item_ids = f.read().splitlines()
        if self.item_embeddings.shape != (self.manifest["num_items"], self.manifest["dim"]):
            raise ValueError("item_embeddings.npy does not match the manifest")
        if len(self.item_ids) != self.manifest["num_items"]:
            raise ValueError("item_ids.txt does not match the manifest")
        self.item_sides = self._read_sides(os.path.join(path, "items.tsv"))
        self.saved_model = tf.saved_model.load(os.path.join(path, "saved_model"))
        self.signature = self.saved_model.signatures["serving_default"]

    @staticmethod
    def _read_sides(path: str) -> dict[str, dict[str, str]]:
        with tf.io.gfile.GFile(path) as f:
            lines = f.read().splitlines()
        header = lines[0].split("\t")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split("\t")))
            out[row["item"]] = {k: v for k, v in row.items() if k not in ("item", "id", "count")}
        return out

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def ids(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw-id inputs -> the vocabulary ids the network sees (the "ids" signature)."""
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in self.saved_model.signatures["ids"](**tensors).items()}

    def user_vectors(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw-id inputs (the serving signature's keys) -> [B, d]."""
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        return self.signature(**tensors)["user_vector"].numpy()

    def augmented_items(self) -> np.ndarray:
        """[C, d + 1]: [v_c, b_c], so that [u, 1] . [v_c, b_c] is the model's score."""
        return np.hstack([self.item_embeddings, self.item_bias[:, None]]).astype(np.float32)


def augment_queries(user_vectors: np.ndarray) -> np.ndarray:
    ones = np.ones((user_vectors.shape[0], 1), np.float32)
    return np.hstack([user_vectors.astype(np.float32), ones])
