"""SDM's blocks, one layer per module. Layers take and return tensors and do no I/O."""

from sdm_tf.model.layers.embeddings import FeatureEmbeddings
from sdm_tf.model.layers.fusion import Fusion
from sdm_tf.model.layers.long_term import LongTermPooling
from sdm_tf.model.layers.self_attention import CausalSelfAttention
from sdm_tf.model.layers.stacked_lstm import StackedLSTM
from sdm_tf.model.layers.user_attention import UserAttention

__all__ = [
    "CausalSelfAttention",
    "FeatureEmbeddings",
    "Fusion",
    "LongTermPooling",
    "StackedLSTM",
    "UserAttention",
]
