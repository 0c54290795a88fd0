"""ParameterServerStrategy with an in-process cluster (2 PS, 2 workers)."""

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf import distribute as D
from sdm_tf import export as X
from sdm_tf import training


def test_table_partitioner_splits_only_tables():
    p = D.TablePartitioner(num_shards=2, min_rows=100)
    assert p(tf.TensorShape([600, 8]), tf.float32) == [2, 1]
    assert p(tf.TensorShape([600]), tf.float32) == [2]
    assert p(tf.TensorShape([24, 32]), tf.float32) == [1, 1]
    assert p(tf.TensorShape([]), tf.float32) == []


def test_get_strategy_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert D.get_strategy("auto") is tf.distribute.get_strategy()
    spec = D.cluster_spec(1, 1)
    monkeypatch.setenv("TF_CONFIG", D.tf_config_for(spec, "chief", 0))
    assert D.task_type() == "chief"
    with pytest.raises(ValueError):
        D.get_strategy("nope")


@pytest.fixture(scope="module")
def ps_strategy():
    resolver, servers = D.in_process_cluster(num_ps=2, num_workers=2)
    strategy = D.parameter_server_strategy(resolver, min_rows=100)
    yield strategy
    del servers


def _devices(var):
    return sorted({v.device for v in getattr(var, "variables", [var])})


def test_ps_training_shards_tables_and_learns(
    ps_strategy, preprocessed_dir, tmp_path, trained_model_dir
):
    cfg = C.get_config(
        "smoke", "PSDMMAL-N",
        ["train.epochs=3", "train.steps_per_epoch=15", "train.learning_rate=0.01"],
    )  # fmt: skip
    result = training.train(
        cfg, str(preprocessed_dir), str(tmp_path), strategy=ps_strategy, verbose=0
    )
    model = result["model"]
    for var in (model.tower.embeddings.tables["item"], model.output_embeddings, model.output_bias):
        devices = _devices(var)
        assert any("/job:ps/replica:0/task:0" in d for d in devices), devices
        assert any("/job:ps/replica:0/task:1" in d for d in devices), devices
    lstm_kernel = model.tower.lstm.cells[0].cell.kernel
    assert len(_devices(lstm_kernel)) == 1  # small kernels stay whole
    losses = result["history"]["loss"]
    assert losses[-1] < losses[0]
    assert result["optimizer_steps"] == 45

    # The PS-trained model restores on one device and exports to the same signature.
    restored = training.restore(str(tmp_path))
    ps_export = X.Export(X.export(restored, cfg, str(preprocessed_dir), str(tmp_path / "export")))
    local_export = X.Export(X.export(training.restore(str(trained_model_dir)),
                                     C.load_config(str(trained_model_dir)),
                                     str(preprocessed_dir), str(tmp_path / "export_local")))  # fmt: skip
    assert (
        ps_export.signature.structured_input_signature
        == local_export.signature.structured_input_signature
    )
    assert (
        ps_export.signature.structured_outputs.keys()
        == local_export.signature.structured_outputs.keys()
    )
    np.testing.assert_allclose(restored.item_table.numpy(), np.concatenate(
        [v.numpy() for v in model.output_embeddings.variables]))  # fmt: skip
