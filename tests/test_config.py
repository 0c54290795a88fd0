import pytest

from sdm_tf import config as C


def test_presets_follow_the_paper():
    off = C.get_config("paper_offline", "PSDMMAL")
    on = C.get_config("paper_online", "PSDMMAL")
    assert (off.model.dim, off.model.num_heads) == (64, 4)
    assert (on.model.dim, on.model.num_heads) == (128, 8)
    assert off.train.batch_size == 256 and off.train.learning_rate == 1e-3
    assert off.train.clipnorm == 5.0 and off.model.lstm_dropout == 0.2


def test_variants_switch_blocks():
    assert not C.get_config("smoke", "SDMMA").model.use_user_attention
    assert not C.get_config("smoke", "PSDMMA").model.use_long_term
    assert C.get_config("smoke", "PSDMMAL-N").model.next_n == 5
    assert not C.get_config("smoke", "PSDMMAL-NoS").model.use_side_info


def test_overrides_are_typed():
    cfg = C.get_config(
        "smoke",
        "PSDMMAL",
        [
            "model.num_heads=4",
            "model.tied_output=true",
            "model.fusion=concat",
            "train.bucket_boundaries=2:4",
            "train.learning_rate=0.01",
            "model.side_dims=brand:6;shop:2",
        ],
    )
    assert cfg.model.num_heads == 4 and cfg.model.tied_output is True
    assert cfg.train.bucket_boundaries == (2, 4) and cfg.train.learning_rate == 0.01
    assert cfg.model.side_dims == {"brand": 6, "shop": 2}


@pytest.mark.parametrize(
    "override",
    [
        "model.nope=1",
        "nope.dim=1",
        "model.dim",
        "model.fusion=sum",
        "model.num_heads=3",
        "model.softmax_dtype=float16",
    ],
)
def test_bad_overrides_fail_clearly(override):
    with pytest.raises(ValueError):
        C.get_config("smoke", "PSDMMAL", [override])


def test_config_round_trips_through_the_model_dir(tmp_path):
    cfg = C.get_config("smoke", "PSDMMAL-N", ["train.bucket_boundaries=3:6"])
    C.save_config(cfg, str(tmp_path))
    assert C.load_config(str(tmp_path)) == cfg


def test_the_default_preset_is_the_paper_architecture_with_the_validated_recipe():
    cfg = C.get_config("default", "PSDMMAL-N")
    off = C.get_config("paper_offline", "PSDMMAL-N")
    assert (cfg.model.dim, cfg.model.item_dim, cfg.model.num_heads) == (128, 128, 4)
    assert cfg.model.tied_output and cfg.model.lstm_dropout == cfg.model.embedding_dropout == 0.5
    assert cfg.train.batch_size == 128
    # Blocks, fusion and objective are the paper's.
    for field in ("use_lstm", "use_self_attention", "use_user_attention", "use_long_term",
                  "fusion", "num_lstm_layers", "next_n", "num_sampled"):  # fmt: skip
        assert getattr(cfg.model, field) == getattr(off.model, field), field


def test_epochs_zero_means_early_stopping_with_validation():
    train = C.get_config("default").train
    assert train.epochs == 0 and train.patience == 8
    assert train.resolved_epochs(validating=True) == C.TrainConfig.EPOCHS_WITH_VALIDATION == 200
    assert train.resolved_epochs(validating=False) == C.TrainConfig.EPOCHS_WITHOUT == 10
    assert C.get_config("default", overrides=["train.epochs=7"]).train.resolved_epochs(True) == 7


@pytest.mark.parametrize(
    "stats, rule",
    [
        ({"train_examples": 100, "train_examples_without_long_term": 95}, "short_term"),
        ({"train_examples": 100, "train_examples_without_long_term": 90}, "short_term"),
        ({"train_examples": 100, "train_examples_without_long_term": 89}, "fuse"),
        ({"train_examples": 100}, "fuse"),  # preprocessed before the count existed
        ({}, "fuse"),
    ],
)
def test_empty_long_term_auto_follows_the_share_of_examples_without_history(stats, rule):
    cfg = C.get_config("default", "PSDMMAL")
    assert cfg.model.empty_long_term == "auto"
    resolved = C.resolve_auto(cfg, stats)
    assert resolved.model.empty_long_term == rule
    assert cfg.model.empty_long_term == "auto"  # the caller's config is left as it was


def test_an_explicit_empty_long_term_is_kept():
    cfg = C.get_config("default", "PSDMMAL", ["model.empty_long_term=fuse"])
    stats = {"train_examples": 10, "train_examples_without_long_term": 10}
    assert C.resolve_auto(cfg, stats).model.empty_long_term == "fuse"


@pytest.mark.parametrize(
    "events, dropout",
    [(5_000, 0.3), (4_999, 0.5), (0, 0.5), (None, 0.5)],  # 100 users: 50 events a user or more
)
def test_long_histories_take_the_long_history_dropout(events, dropout):
    stats = {"users": 100}
    if events is not None:
        stats["train_events"] = events
    cfg = C.get_config("default", "PSDMMAL")
    assert (cfg.model.lstm_dropout, cfg.model.long_history_dropout) == (0.5, 0.3)
    model = C.resolve_auto(cfg, stats).model
    assert (model.lstm_dropout, model.embedding_dropout) == (dropout, dropout)
    assert cfg.model.lstm_dropout == 0.5  # the caller's config is left as it was


def test_a_dropout_set_by_hand_holds_on_long_histories():
    stats = {"users": 1, "train_events": 500}
    cfg = C.get_config("default", "PSDMMAL", ["model.lstm_dropout=0.1"])
    model = C.resolve_auto(cfg, stats).model
    assert (model.lstm_dropout, model.embedding_dropout, model.long_history_dropout) == (
        0.1,
        0.5,
        0,
    )
    both = ["model.lstm_dropout=0.1", "model.long_history_dropout=0.2"]
    model = C.resolve_auto(C.get_config("default", "PSDMMAL", both), stats).model
    assert (model.lstm_dropout, model.embedding_dropout) == (0.2, 0.2)
    assert C.get_config("paper_offline").model.long_history_dropout == 0  # the paper's .2


@pytest.mark.parametrize(
    "repeats, rule",
    [(0, "on"), (4, "on"), (5, "off"), (19, "off"), (None, "off")],
)
def test_mask_inputs_auto_follows_the_share_of_repeated_labels(repeats, rule):
    stats = {"train_labels": 100}
    if repeats is not None:
        stats["train_labels_in_input"] = repeats
    cfg = C.get_config("default", "PSDMMAL")
    assert cfg.model.mask_inputs == "auto"  # the default
    assert C.resolve_auto(cfg, stats).model.mask_inputs == rule
