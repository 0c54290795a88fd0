"""python -m launch.bench_split --split DIR --output_dir OUT [--preset NAME] [--epochs N]

DIR is any directory written by ../shared/bench/prepare.py. Prints score.py's metrics.
"""

import json
import logging

from absl import flags

from launch import bench_lib as bench_split
from launch import common
from launch.preprocess import quiet_beam
from pipelines.preprocess import session_gap_text
from sdm_tf import config as C
from sdm_tf.train import evaluation as E

SPLIT = common.SPLIT
OUTPUT_DIR = common.OUTPUT_DIR
EXCLUDE_SEEN = flags.DEFINE_enum(
    "exclude_seen",
    "auto",
    ["auto", "yes", "no", "first", "frequent"],
    "the test user's history in the ranking: yes drops it, no ranks it as any item, first puts "
    "it ahead (most recent first) of the ranking without it, frequent too (most often seen "
    "first); auto: the rule that scores highest on the validation split",
)
BEAM_LOGS = flags.DEFINE_bool(
    "beam_logs", False, "show Beam's worker logs (hundreds of INFO lines a run)"
)
BASELINES = flags.DEFINE_bool(
    "baselines", True, "also rank the test split with popularity and item-CF (same history rule)"
)
FINAL_FIT = common.FINAL_FIT
CONTINUE_EPOCHS = flags.DEFINE_integer(
    "continue_epochs", 3, "epochs of --final_fit=continue|resume, full-rate epochs of warm"
)
SCORE_SCRIPT = flags.DEFINE_string("score_script", None, "score.py (default: ../shared/bench)")
PIPELINE_ARGS = flags.DEFINE_multi_string(
    "pipeline_arg", [], "extra launch.preprocess argument, e.g. --pipeline_arg=--long_term_days=30"
)


def main(argv):
    del argv
    common.require(SPLIT, OUTPUT_DIR)
    pipeline_args = list(PIPELINE_ARGS.value)
    if not BEAM_LOGS.value:  # the workers' chatter, relayed by the job service
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
        quiet_beam(pipeline_args)
    summary = bench_split.run(
        SPLIT.value,
        OUTPUT_DIR.value,
        common.experiment_config(),
        exclude_seen=EXCLUDE_SEEN.value,
        score_script=SCORE_SCRIPT.value,
        preprocess_args=pipeline_args,
        baselines=BASELINES.value,
        final_fit=FINAL_FIT.value,
        continue_epochs=CONTINUE_EPOCHS.value,
    )
    rows = {name: s.get("score_py", s["metrics"]) for name, s in summary["systems"].items()}
    print(E.format_table(rows, (20, 50)))
    val = summary["validation"] or {}
    cfg = summary["config"]
    share = C.long_term_empty_share(summary["preprocess_stats"])
    per_user = C.events_per_user(summary["preprocess_stats"])
    model = cfg["model"]
    print(
        f"preset {cfg['preset']}, variant {cfg['variant']} "
        f"({summary['train']['blocks']}"
        + (f"; {share:.0%} of the training examples have no long-term history" if share else "")
        + "), "
        f"{summary['train']['objective']}, dropout {model['lstm_dropout']:g}"
        + (f" ({per_user:.0f} training events a user)" if per_user else "")
        + "; "
        f"chosen epoch {val.get('best_epoch')} (validation {val.get('metric')} "
        f"{val.get('best', float('nan')):.4f}), history rule {summary['history_rule']}"
    )
    print(f"sessions: session gap {session_gap_text(summary['preprocess_stats'])}")
    print(f"item table: {item_init_text(summary['train'].get('item_init'))}")
    kind, epochs, decay, rate = summary.get("final_fit_run") or ("", 0, 0, 0.0)
    low = f"{rate * cfg['train']['decay_factor']:g}"
    if kind == "refit" and decay:
        print(
            f"the rate decayed after epoch {decay}: the final fit ran {decay} epochs at {rate:g}, "
            f"then {epochs - decay} at {low}"
        )
    elif kind == "warm":
        print(
            f"the final fit started from epoch {val.get('decay_epoch')}'s weights (where the rate "
            f"dropped): {decay} epochs at {rate:g}, then {epochs - decay} at {low}"
        )
    elif kind in ("resume", "continue"):
        print(f"the final fit went on from the best weights: {epochs} epochs at {rate:g}")
    elif FINAL_FIT.value == "none":
        print("no final fit: validation's best checkpoint ranked the test split")
    print(json.dumps({"seconds": {k: round(v, 1) for k, v in summary["seconds"].items()}}))


def item_init_text(init: dict | None) -> str:
    """How the validation run's item table started (`training.train`'s "item_init")."""
    if not init or not init.get("items_initialised"):
        return "random start" + (" (too many items for the co-occurrence start)" if init else "")
    return (
        f"started from co-occurrences (PPMI-SVD): {init['items_initialised']:,} of "
        f"{init['items']:,} items, {init['pairs']:,} pairs, {init['seconds']:g} s"
    )


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
