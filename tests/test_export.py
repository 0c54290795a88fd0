"""The exported user tower matches the in-process model; exports are atomic and verified."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.serving import export as X
from sdm_tf.train import predict, training
from sdm_tf.train.data_dir import load_item_vocab


def raw_inputs(batch, spec, vocabs):
    """Eval-example ids -> the raw strings a client would send ("" padding, unknown OOV)."""

    def to_raw(ids, vocab):
        table = np.array(["", F.OOV_TOKEN, *vocab], dtype=object)
        return np.vectorize(lambda v: v.encode("utf-8"), otypes=[object])(table[ids])

    out = {F.LENGTH: batch[F.LENGTH].numpy()}
    for f in spec.item_features:
        for key in (F.short_key(f), F.long_key(f)):
            out[key] = to_raw(batch[key].numpy(), vocabs[f])
    for p in spec.profile_features:
        out[F.profile_key(p)] = to_raw(batch[F.profile_key(p)].numpy(), vocabs[p])
    return out


def test_saved_model_matches_the_in_process_model(preprocessed_dir, trained_model_dir, export_dir):
    model = training.restore(str(trained_model_dir))
    exp = X.Export(str(export_dir))
    spec = model.dataset
    vocabs = {
        f: X.read_vocab(str(preprocessed_dir), f)
        for f in (*spec.item_features, *spec.profile_features)
    }
    keys = F.FeatureSpec(spec).model_input_keys()
    n = 0
    worst = 0.0
    for batch in predict.eval_batches(str(preprocessed_dir), spec, batch_size=64):
        ours = model({k: batch[k] for k in keys}, training=False).numpy()
        theirs = exp.user_vectors(raw_inputs(batch, spec, vocabs))
        worst = max(worst, float(np.abs(ours - theirs).max()))
        n += ours.shape[0]
    assert n > 0
    assert worst < 1e-5
    np.testing.assert_array_equal(exp.item_embeddings, model.item_table.numpy())
    assert exp.item_ids == load_item_vocab(str(preprocessed_dir))


def test_unknown_ids_map_to_oov(export_dir):
    exp = X.Export(str(export_dir))
    spec = exp.dataset

    def inputs(item):
        x = {F.LENGTH: np.array([1])}
        for f in spec.item_features:
            x[F.short_key(f)] = np.array([[item if f == F.ITEM else ""]], dtype=bytes)
            x[F.long_key(f)] = np.array([[""]], dtype=bytes)
        for p in spec.profile_features:
            x[F.profile_key(p)] = np.array([b"?"])
        return x

    a = exp.user_vectors(inputs("never-seen-1"))
    b = exp.user_vectors(inputs("never-seen-2"))
    np.testing.assert_allclose(a, b)  # both are the OOV id
    c = exp.user_vectors(inputs(exp.item_ids[0]))
    assert np.abs(a - c).max() > 0


def test_manifest_and_verification(export_dir, tmp_path):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for key in ("dim", "num_items", "preset", "variant", "vocab_sha256", "created", "files"):
        assert key in manifest
    assert "saved_model/saved_model.pb" in manifest["files"]
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    emb = np.load(broken / "item_embeddings.npy")
    np.save(broken / "item_embeddings.npy", emb + 1)
    with pytest.raises(ValueError, match="checksum"):
        X.Export(str(broken))


def test_latest_skips_incomplete_versions(export_dir):
    # A newer version without manifest.json (an export still being written, or one that died)
    # is never picked up.
    base = export_dir.parent
    (base / "99999999999999" / "saved_model").mkdir(parents=True, exist_ok=True)
    assert X.latest(str(base)) == str(export_dir)
    with pytest.raises(FileNotFoundError, match="no complete export"):
        X.latest(str(base / "99999999999999"))


def test_export_index_and_retrieval_on_an_object_store(preprocessed_dir, trained_model_dir):
    # ram:// is TF's in-memory filesystem: no local path exists, so any np.save, shutil or
    # os.rename on the way would fail here, as it would on gs://.
    from launch import build_index
    from sdm_tf import config as C
    from sdm_tf.serving import index as I
    from sdm_tf.serving import service

    model = training.restore(str(trained_model_dir))
    cfg = C.load_config(str(trained_model_dir))
    path = X.export(model, cfg, str(preprocessed_dir), "ram://exports/sdm")
    assert path.startswith("ram://") and tf.io.gfile.exists(path + "/manifest.json")
    assert X.latest("ram://exports/sdm") == path
    report = build_index.run(path, I.IndexConfig(kind="hnsw", use_gpu=False), 10, 50)
    index, index_cfg = I.load(report["path"])
    assert index.ntotal == len(X.Export(path).item_ids) and index_cfg.kind == "hnsw"
    retriever = service.Retriever(X.Export(path), index, index_cfg)
    exp = retriever.export
    req = service.RetrieveRequest(events=[{"item": exp.item_ids[3]}], k=7)
    out = retriever.retrieve([req])[0]
    assert len(out["items"]) == 7 and not out["fallback"]
    # A half-written index (no metadata yet, or bytes that do not match it) is refused.
    tf.io.gfile.remove(report["path"] + ".json")
    with pytest.raises(FileNotFoundError, match="no complete index"):
        I.load(report["path"])
    I.save(index, index_cfg, report["path"], {})
    with tf.io.gfile.GFile(report["path"], "wb") as f:
        f.write(b"truncated")
    with pytest.raises(ValueError, match="does not match"):
        I.load(report["path"])


def test_inputs_longer_than_the_fixed_shapes_take_the_plain_path(export_dir, trained_model_dir):
    exp = X.Export(str(export_dir))
    model = training.restore(str(trained_model_dir))
    spec = exp.dataset
    t = spec.max_session_length + 3
    raw = {F.LENGTH: np.array([t, 2])}
    ids = {F.LENGTH: np.array([t, 2])}
    for f in spec.item_features:
        raw[F.short_key(f)] = np.array([[""] * t, [""] * t], dtype=bytes)
        raw[F.long_key(f)] = np.array([[""], [""]], dtype=bytes)
        ids[F.short_key(f)] = np.zeros((2, t), np.int64)
        ids[F.long_key(f)] = np.zeros((2, 1), np.int64)
    for p in spec.profile_features:
        raw[F.profile_key(p)] = np.array([b"", b""])
        ids[F.profile_key(p)] = np.zeros(2, np.int64)
    theirs = exp.user_vectors(raw)
    ours = model({k: tf.constant(v) for k, v in ids.items()}, training=False).numpy()
    assert theirs.shape == (2, exp.dim)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
