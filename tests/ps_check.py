"""The in-process PS cluster check, run in its own process by test_distribute.py.

Connecting to a cluster changes TensorFlow's global eager context for the rest of the process,
so the check must not share a process with the other tests.

    python tests/ps_check.py DATA_DIR MODEL_DIR LOCAL_MODEL_DIR OUT_JSON
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from sdm_tf import config as C  # noqa: E402
from sdm_tf.serving import export as X  # noqa: E402
from sdm_tf.train import distribute as D  # noqa: E402
from sdm_tf.train import training  # noqa: E402


def devices(var):
    return sorted({v.device for v in getattr(var, "variables", [var])})


def main(data_dir, model_dir, local_model_dir, out):
    resolver, servers = D.in_process_cluster(num_ps=2, num_workers=2)
    strategy = D.parameter_server_strategy(resolver, min_rows=100)
    cfg = C.get_config(
        "smoke", "PSDMMAL-N",
        ["model.dim=16", "model.item_dim=16", "model.num_sampled=64", "train.batch_size=64",
         "train.epochs=4", "train.steps_per_epoch=25", "train.learning_rate=0.005"],
    )  # fmt: skip
    result = training.train(cfg, data_dir, model_dir, strategy=strategy, verbose=0)
    model = result["model"]
    tables = {
        "item_embedding": devices(model.tower.embeddings.tables["item"]),
        "output_embeddings": devices(model.output_embeddings),
        "output_bias": devices(model.output_bias),
        "lstm_kernel": devices(model.tower.lstm.cells[0].cell.kernel),
    }
    trained_table = np.concatenate([v.numpy() for v in model.output_embeddings.variables])
    restored = training.restore(model_dir)
    ps_export = X.Export(X.export(restored, cfg, data_dir, os.path.join(model_dir, "export")))
    local = X.Export(
        X.export(
            training.restore(local_model_dir),
            C.load_config(local_model_dir),
            data_dir,
            os.path.join(model_dir, "export_local"),
        )
    )
    report = {
        "devices": tables,
        "shard_rows": {
            "item_embedding": [
                int(v.shape[0]) for v in model.tower.embeddings.tables["item"].variables
            ],
            "output_embeddings": [int(v.shape[0]) for v in model.output_embeddings.variables],
        },
        "losses": result["history"]["loss"],
        "optimizer_steps": result["optimizer_steps"],
        "same_signature": str(ps_export.signature.structured_input_signature)
        == str(local.signature.structured_input_signature),
        "same_outputs": sorted(ps_export.signature.structured_outputs)
        == sorted(local.signature.structured_outputs),
        "restored_equals_trained": bool(np.allclose(restored.item_table.numpy(), trained_table)),
    }
    with open(out, "w") as f:
        json.dump(report, f)
    del servers


if __name__ == "__main__":
    main(*sys.argv[1:5])
