"""Experiment configuration: nested dataclasses, named presets, paper variants, overrides.

    cfg = get_config("paper_offline", variant="PSDMMAL-N", overrides=["model.num_heads=8"])
    save_config(cfg, model_dir)   # the resolved config travels with the run

Presets fix sizes; variants (paper §4.3) switch blocks on and off:

=============  ====  ==============  ====  =========  =========  ===========
variant        LSTM  self-attention  user  long-term  side info  next-N
=============  ====  ==============  ====  =========  =========  ===========
SDMMA          yes   yes             no    no         yes        1
PSDMMA         yes   yes             yes   no         yes        1
PSDMMAL        yes   yes             yes   yes        yes        1
PSDMMAL-N      yes   yes             yes   yes        yes        N (5)
PSDMMAL-NoS    yes   yes             yes   yes        no         1
=============  ====  ==============  ====  =========  =========  ===========
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Iterable, Mapping
from typing import Any

FUSIONS = ("gate", "add", "concat", "multiply")
# The user tower: SDM's, or a baseline of the paper's §4.3 with the same input, output table and
# loss (`sdm_tf.model.baselines`).
MODEL_KINDS = ("sdm", "youtube_dnn", "gru4rec")
LOSS_POSITIONS = ("all", "last")
SOFTMAX_DTYPES = ("float32", "bfloat16")
EMPTY_LONG_TERM = ("auto", "fuse", "short_term")
# "auto": "short_term" where at least this share of the training examples has no long-term
# history at all, else the paper's "fuse". On validation (3 seeds) the short term alone gained on
# Amazon Beauty (99.3 % of its examples without a long-term history: reviews spaced 60 s apart
# fall into one session) and lost on MovieLens-small (41 %); the Taobao sample has 7 %.
EMPTY_LONG_TERM_SHARE = 0.9
MASK_INPUTS = ("auto", "on", "off")
# "auto": "on" where fewer than this share of the training labels repeat an item the user had
# before (MovieLens-small and Amazon Beauty: none; the Taobao sample: 19 % within the session
# and the bag alone), else "off".
MASK_INPUTS_REPEAT_SHARE = 0.05
# `long_history_dropout` applies where the users have at least this many training events on
# average (MovieLens-small: 121, the Taobao sample: 62; Amazon Beauty: 6.9). SASRec draws the
# same line (dropout .2 on MovieLens-1M, 163 actions a user; .5 on the Amazon sets, ~9).
LONG_HISTORY_EVENTS = 50


@dataclasses.dataclass
class ModelConfig:
    """The SDM network.

    Attributes:
      kind: the user tower: "sdm", or the baselines "youtube_dnn" and "gru4rec" (the blocks and
        fusion below are SDM's; the baselines use the sizes, dropouts and the objective).
      dim: d, the width of the LSTM, attention, user vectors and the output table.
      item_dim: embedding size of the item id (eq. 3).
      side_dims: embedding size per side feature (leaf_category, category, brand, shop);
        features not listed get `side_dim`.
      side_dim: default side-feature embedding size.
      profile_dim: embedding size per profile feature (eq. 4).
      num_lstm_layers: stacked LSTM depth (eq. 5); residual connections between layers.
      lstm_dropout: dropout on the LSTM outputs (0.2 in §4.4).
      embedding_dropout: dropout on the input embeddings (short-term and long-term).
      long_history_dropout: > 0: on data whose users have long histories (on average at least
        `LONG_HISTORY_EVENTS` training events), `resolve_auto` sets both dropouts above to this
        value; 0: never (`get_config` sets 0 when an override names either dropout). The
        default preset's .3 against its .5: validation NDCG@50 +.005 to +.008 on every seed
        of MovieLens-small; on Amazon Beauty .3 was behind .5 from epoch 11 on.
      num_heads: heads of the multi-head self-attention (eq. 6-9).
      attention_dropout: dropout on the attention weights.
      use_lstm, use_self_attention, use_user_attention, use_long_term, use_side_info: the blocks.
      user_attention_without_profile: the user attention (eq. 10) attends with the profile
        embedding e_u. On data without profile features there is no user to attend with: False
        leaves the block out there (s_t is the self-attention output at t, as in SDMMA); True
        keeps it with a learned vector for e_u, which makes it one position-blind pooling for
        every user and cost validation NDCG@50 on both leave-one-out splits (Beauty .0746 ->
        SDMMA .0801; MovieLens PSDMMA .0977 / .0899 vs SDMMA .1082 / .0992; docs/results.md).
      fusion: how short- and long-term combine: "gate" (eq. 13-14), "add", "concat", "multiply".
      empty_long_term: a user whose long-term bags are all empty: "fuse" (the paper's: the
        pooled vector of nothing, p = tanh(b), is fused like any other), "short_term" (o_t =
        s_t) or "auto" (the default): "short_term" on data where almost no training example has
        a long-term history (`EMPTY_LONG_TERM_SHARE`), else "fuse"; `resolve_auto` decides from
        the data's stats.json, and the model directory's config holds the value it used.
      tied_output: share the item input embedding as the softmax table (needs item_dim == dim).
      temperature: 0: scores are inner products (the paper's); > 0: user vectors and item rows
        are L2-normalised and scores are cosines divided by the temperature.
      num_sampled: negatives of the sampled softmax.
      full_softmax_max_items: catalogues of at most this many items (or no more than
        `num_sampled`) train with the exact softmax over every item instead of 1,000 sampled
        negatives: ahead on validation at equal epochs, and it needs fewer of them (MovieLens-
        small, 3,313 items: ~4 s an epoch instead of ~10; Amazon Beauty, 12,092 items: best
        validation NDCG@50 .0724 at epoch 15 against .0702 at epoch 27; docs/results.md). Its
        cost grows with the catalogue (one [positions, items] logit matrix a step), hence the
        bound. 0: always sample.
      next_n: labels per position (1: next item; N: PSDMMAL-N).
      loss_positions: "all" valid positions of the session, or the "last" one only.
      mask_inputs: "on": the exact softmax leaves out the items a position has in its input
        (session so far, long-term item bag) or in the user's history before the session (the
        records' `prior`), other than its labels, as evaluation leaves the user's history out
        of the ranking; "off"; "auto": "on" where labels almost never repeat an item the user
        had (`MASK_INPUTS_REPEAT_SHARE`). The sampled softmax never masks.
      softmax_dtype: the exact softmax's matmul inputs, "float32" or "bfloat16" (performance.md).
    """

    kind: str = "sdm"
    dim: int = 64
    item_dim: int = 64
    side_dims: dict[str, int] = dataclasses.field(default_factory=dict)
    side_dim: int = 16
    profile_dim: int = 8
    num_lstm_layers: int = 2
    lstm_dropout: float = 0.2
    embedding_dropout: float = 0.0
    long_history_dropout: float = 0.0
    num_heads: int = 4
    attention_dropout: float = 0.0
    use_lstm: bool = True
    use_self_attention: bool = True
    use_user_attention: bool = True
    user_attention_without_profile: bool = False
    use_long_term: bool = True
    use_side_info: bool = True
    fusion: str = "gate"
    empty_long_term: str = "auto"
    tied_output: bool = False
    temperature: float = 0.0
    num_sampled: int = 1000
    full_softmax_max_items: int = 20_000
    next_n: int = 1
    loss_positions: str = "all"
    mask_inputs: str = "auto"
    softmax_dtype: str = "float32"

    def validate(self) -> None:
        choices = dict(kind=MODEL_KINDS, fusion=FUSIONS, mask_inputs=MASK_INPUTS)
        choices.update(empty_long_term=EMPTY_LONG_TERM, loss_positions=LOSS_POSITIONS)
        for name, allowed in {**choices, "softmax_dtype": SOFTMAX_DTYPES}.items():
            if (value := getattr(self, name)) not in allowed:
                raise ValueError(f"model.{name} must be one of {allowed}, got {value!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.tied_output and self.item_dim != self.dim:
            raise ValueError("tied_output needs item_dim == dim")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0: plain inner product)")
        if self.next_n < 1 or self.num_sampled < 1 or self.num_lstm_layers < 0:
            raise ValueError("next_n, num_sampled must be >= 1 and num_lstm_layers >= 0")
        if not (self.use_lstm or self.use_self_attention):
            raise ValueError("the short-term block needs the LSTM or the self-attention")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and input (paper §4.4: Adam 1e-3, clip 5, batch 256).

    With a validation split (a data directory with test/), training keeps the weights of the
    best epoch by `validation_metric`. After `patience` epochs without improvement (0: never)
    it goes back to the best weights (and optimizer state), multiplies the learning rate by
    `decay_factor` and goes on until `decay_patience` epochs pass without improvement; then it
    stops (at once when `decay_factor` is 0 or 1). `epochs` is then the most epochs. `epochs` = 0
    (the default) means `EPOCHS_WITH_VALIDATION` with a validation split and `EPOCHS_WITHOUT`
    without one.

    decay_epoch: without validation (the final fit replaying what validation chose), the epochs
      at `learning_rate` before the rate is multiplied by `decay_factor`; 0: never.
    """

    batch_size: int = 256
    learning_rate: float = 1e-3
    clipnorm: float = 5.0
    epochs: int = 0
    steps_per_epoch: int = 0  # 0: one pass over the data
    shuffle_buffer: int = 10_000
    bucket_boundaries: tuple[int, ...] = (4, 8, 16, 32)
    seed: int = 0
    validation_metric: str = "NDCG@50"
    patience: int = 8
    # A tenth of the rate from the best weights once validation stops improving: validation
    # NDCG@50 Beauty .0727 -> .0746, MovieLens .1016 -> .1035 (seed 0; docs/results.md).
    decay_factor: float = 0.1
    decay_patience: int = 3
    decay_epoch: int = 0
    weight_decay: float = 0.0  # AdamW's decoupled decay (0: Adam)
    item_init: str = "cooccurrence"  # the item table's start (`sdm_tf.train.item_init`)
    # Bit-identical runs for one seed in one process (TensorFlow's op determinism; its cost is in
    # docs/performance.md). Off by default, as in TensorFlow: it is process-wide, and under
    # parameter servers the asynchronous updates stay unordered whatever it says.
    deterministic: bool = False

    EPOCHS_WITH_VALIDATION: typing.ClassVar[int] = 200
    EPOCHS_WITHOUT: typing.ClassVar[int] = 10

    def resolved_epochs(self, validating: bool) -> int:
        if self.epochs:
            return self.epochs
        return self.EPOCHS_WITH_VALIDATION if validating else self.EPOCHS_WITHOUT


@dataclasses.dataclass
class ExperimentConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    preset: str = "paper_offline"
    variant: str = "PSDMMAL"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        # Configs saved before `user_attention_without_profile` existed ran the learned query,
        # and before `mask_inputs` the softmax over every item.
        before = {"user_attention_without_profile": True, "mask_inputs": "off"}
        model = ModelConfig(**{**before, **d.get("model", {})})
        train = {"item_init": "random", **d.get("train", {})}  # before item_init existed
        if "bucket_boundaries" in train:
            train["bucket_boundaries"] = tuple(train["bucket_boundaries"])
        return cls(
            model=model, train=TrainConfig(**train), preset=d["preset"], variant=d["variant"]
        )


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # What the launchers run unless told otherwise: the paper's architecture at its online width
    # (d = 128) with 4 heads, and the training recipe chosen on validation splits
    # (docs/results.md): the softmax table tied to the item input embedding, dropout 0.5 on the
    # LSTM outputs and the input embeddings, batch 128, and early stopping on validation where
    # the data has a split.
    "default": {
        "model": {
            "dim": 128,
            "item_dim": 128,
            "num_heads": 4,
            "tied_output": True,
            "lstm_dropout": 0.5,
            "embedding_dropout": 0.5,
            "long_history_dropout": 0.3,
        },
        "train": {"batch_size": 128},
    },
    # §4.4 offline: d = 64, 4 heads, the paper's dropout (0.2) and batch (256).
    "paper_offline": {"model": {"dim": 64, "item_dim": 64, "num_heads": 4}, "train": {}},
    # §4.4 online: d = 128, 8 heads.
    "paper_online": {
        "model": {"dim": 128, "item_dim": 128, "num_heads": 8, "side_dim": 32},
        "train": {},
    },
    # Tiny dimensions for tests.
    "smoke": {
        "model": {
            "dim": 8,
            "item_dim": 8,
            "side_dim": 4,
            "profile_dim": 4,
            "num_heads": 2,
            "num_lstm_layers": 1,
            "num_sampled": 16,
            "full_softmax_max_items": 0,
        },
        "train": {"batch_size": 32, "epochs": 1, "shuffle_buffer": 256},
    },
}

VARIANTS: dict[str, dict[str, Any]] = {
    "SDMMA": {"use_user_attention": False, "use_long_term": False, "next_n": 1},
    "PSDMMA": {"use_user_attention": True, "use_long_term": False, "next_n": 1},
    "PSDMMAL": {"use_user_attention": True, "use_long_term": True, "next_n": 1},
    "PSDMMAL-N": {"use_user_attention": True, "use_long_term": True, "next_n": 5},
    "PSDMMAL-NoS": {
        "use_user_attention": True,
        "use_long_term": True,
        "use_side_info": False,
        "next_n": 1,
    },
}


def _coerce(value: str, typ: Any) -> Any:
    typ = typing.get_origin(typ) or typ
    if typ is bool or typ == "bool":
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typ in (int, "int"):
        return int(value)
    if typ in (float, "float"):
        return float(value)
    if typ in (tuple, "tuple[int, ...]"):
        return tuple(int(v) for v in value.split(":") if v)
    if typ in (dict, "dict[str, int]"):
        return {k: int(v) for k, v in (p.split(":") for p in value.split(";") if p)}
    return value


def apply_override(cfg: ExperimentConfig, override: str) -> str:
    """'model.num_heads=8', 'train.bucket_boundaries=4:8:16', 'model.side_dims=brand:8;shop:8'.
    Returns the field it set, e.g. 'model.num_heads'."""
    if "=" not in override:
        raise ValueError(f"overrides look like section.field=value, got {override!r}")
    path, value = override.split("=", 1)
    section_name, _, field = path.strip().partition(".")
    section = getattr(cfg, section_name, None)
    if not dataclasses.is_dataclass(section):
        raise ValueError(f"unknown config section {section_name!r} in {override!r}")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if field not in fields:
        raise ValueError(f"unknown field {field!r} of {section_name}; known: {sorted(fields)}")
    hints = typing.get_type_hints(type(section))
    setattr(section, field, _coerce(value.strip(), hints[field]))
    return f"{section_name}.{field}"


def get_config(
    preset: str = "paper_offline", variant: str = "PSDMMAL", overrides: Iterable[str] = ()
) -> ExperimentConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    p = PRESETS[preset]
    model = ModelConfig(**{**p["model"], **VARIANTS[variant]})
    cfg = ExperimentConfig(
        model=model, train=TrainConfig(**p["train"]), preset=preset, variant=variant
    )
    named = {apply_override(cfg, o) for o in overrides}
    if named & {"model.lstm_dropout", "model.embedding_dropout"}:
        if "model.long_history_dropout" not in named:  # a dropout set by hand holds everywhere
            cfg.model.long_history_dropout = 0.0
    cfg.model.validate()
    if (init := cfg.train.item_init) not in ("cooccurrence", "random"):
        raise ValueError(f"train.item_init must be 'cooccurrence' or 'random', not {init!r}")
    return cfg


def _share(stats: Mapping[str, Any], part: str, whole: str) -> float | None:
    """stats[part] / stats[whole] (None: data preprocessed before stats.json counted them)."""
    count, total = stats.get(part), stats.get(whole)
    return None if count is None or not total else count / total


def long_term_empty_share(stats: Mapping[str, Any]) -> float | None:
    """The share of training examples without any long-term history."""
    return _share(stats, "train_examples_without_long_term", "train_examples")


def repeat_share(stats: Mapping[str, Any]) -> float | None:
    """The share of training labels that repeat an item the user had before them."""
    return _share(stats, "train_labels_in_input", "train_labels")


def events_per_user(stats: Mapping[str, Any]) -> float | None:
    """The mean number of training events a user has."""
    return _share(stats, "train_events", "users")


def resolve_auto(cfg: ExperimentConfig, stats: Mapping[str, Any]) -> ExperimentConfig:
    """`cfg` with its data-driven settings decided from the data's stats.json."""
    model = cfg.model
    per_user = events_per_user(stats)
    if model.long_history_dropout > 0 and per_user is not None:
        if per_user >= LONG_HISTORY_EVENTS:
            rate = model.long_history_dropout
            model = dataclasses.replace(model, lstm_dropout=rate, embedding_dropout=rate)
    if model.empty_long_term == "auto":
        share = long_term_empty_share(stats)
        rule = "short_term" if share is not None and share >= EMPTY_LONG_TERM_SHARE else "fuse"
        model = dataclasses.replace(model, empty_long_term=rule)
    if model.mask_inputs == "auto":
        share = repeat_share(stats)
        on = share is not None and share < MASK_INPUTS_REPEAT_SHARE
        model = dataclasses.replace(model, mask_inputs="on" if on else "off")
    return dataclasses.replace(cfg, model=model)


CONFIG_FILE = "config.json"


def save_config(cfg: ExperimentConfig, model_dir: str) -> str:
    import tensorflow as tf

    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, CONFIG_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(cfg.to_json())
    return path


def load_config(model_dir: str) -> ExperimentConfig:
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(model_dir, CONFIG_FILE)) as f:
        return ExperimentConfig.from_dict(json.load(f))
