"""The in-process PS cluster check, run in its own process by test_distribute.py.

Connecting to a cluster changes TensorFlow's global eager context for the rest of the process,
so the check must not share a process with the other tests.

    python tests/ps_check.py DATA_DIR MODEL_DIR LOCAL_MODEL_DIR OUT_JSON
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from sdm_tf import config as C  # noqa: E402
from sdm_tf.core import features as F  # noqa: E402
from sdm_tf.serving import export as X  # noqa: E402
from sdm_tf.train import distribute as D  # noqa: E402
from sdm_tf.train import item_init as I  # noqa: E402
from sdm_tf.train import training  # noqa: E402
from sdm_tf.train import validation as V  # noqa: E402


def devices(var):
    return sorted({v.device for v in getattr(var, "variables", [var])})


def validated_run(strategy, data_dir: str, model_dir: str, learning_rate: float) -> dict:
    """Training with a validation split under PS: the chief scores eval/ after every epoch,
    keeps the best epoch, drops the rate from it, stops early, and ends on the best weights."""
    validated = data_dir.rstrip("/") + "_validated"
    if not os.path.exists(validated):
        shutil.copytree(data_dir, validated)
        # A validation split is eval/ beside test/ (`validation.has_validation`); test/ is only
        # read to rank the test split afterwards, so eval/'s records stand in for it here.
        shutil.copytree(os.path.join(validated, "eval"), os.path.join(validated, "test"))
    cfg = C.get_config(
        "smoke", "PSDMMAL",
        ["model.dim=16", "model.item_dim=16", "model.num_sampled=64", "train.batch_size=64",
         "train.epochs=8", "train.steps_per_epoch=10", f"train.learning_rate={learning_rate}",
         "train.patience=1", "train.decay_factor=0.5", "train.decay_patience=1"],
    )  # fmt: skip
    result = training.train(cfg, validated, model_dir, strategy=strategy, verbose=0)
    state = V.load_state(model_dir)
    best = training.restore(model_dir)  # model_dir/best/
    return {
        "epochs_run": len(result["history"]["loss"]),
        "curve_epochs": [p["epoch"] for p in state["curve"]],
        "best_epoch": state["best_epoch"],
        "best": state["best"],
        "best_in_curve": max(max(p[f"{r}/NDCG@50"] for r in V.MODEL_RULES) for p in state["curve"]),
        "decay_started": state.get("decay_started"),
        "stopped_early": bool(state.get("stopped_early")),
        "drop_saved": os.path.exists(os.path.join(model_dir, V.DROP_DIR, "ckpt.index")),
        "ends_on_best": bool(
            np.allclose(best.item_table.numpy(), result["model"].item_table.numpy())
        ),
        "learning_rate": float(result["model"].optimizer.learning_rate.numpy()),
    }


def step_decay_run(strategy, data_dir: str, model_dir: str) -> list[float]:
    """The final fit's replay of a drop (`train.decay_epoch`, no validation) under PS: the
    learning rate each epoch ran at."""
    cfg = C.get_config(
        "smoke", "PSDMMAL",
        ["model.dim=16", "model.item_dim=16", "model.num_sampled=64", "train.batch_size=64",
         "train.epochs=3", "train.steps_per_epoch=5", "train.learning_rate=0.004",
         "train.decay_factor=0.5", "train.decay_epoch=2"],
    )  # fmt: skip
    result = training.train(cfg, data_dir, model_dir, strategy=strategy, verbose=0, validate=False)
    return result["history"]["learning_rate"]


def sharded_item_init(strategy, data_dir: str) -> dict:
    """The co-occurrence start written into tables split over the parameter servers."""
    cfg = C.get_config("smoke", "PSDMMAL-N", ["model.dim=16", "model.item_dim=16"])
    spec = training.load_dataset_spec(data_dir)
    with strategy.scope():
        model = training.build_model(spec, cfg)
    I.initialise_item_table(model, data_dir, F.TRAIN, seed=0)
    vectors, has = I.embeddings(*I.pairs_of_split(data_dir, F.TRAIN, spec), spec.num_items, 16)
    tables = {
        "item": (model.tower.embeddings.tables["item"], F.NUM_RESERVED),
        "output": (model.output_embeddings, 0),
    }
    report = {}
    for name, (table, offset) in tables.items():
        got = np.concatenate([v.numpy() for v in table.variables])[offset:]
        report[name] = [len(table.variables), float(np.abs(got[has] - vectors[has]).max())]
    return report


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
        "validation": validated_run(strategy, data_dir, model_dir + "_validated", 0.005),
        # A rate of 0: the score never rises after epoch 1, so the rate drops after epoch 2 (the
        # best weights and optimizer state read back onto the parameter servers) and training
        # stops after epoch 3.
        "validation_flat": validated_run(strategy, data_dir, model_dir + "_flat", 0.0),
        "step_decay_rates": step_decay_run(strategy, data_dir, model_dir + "_decay"),
        "sharded_item_init": sharded_item_init(strategy, data_dir),
    }
    with open(out, "w") as f:
        json.dump(report, f)
    del servers


if __name__ == "__main__":
    main(*sys.argv[1:5])
