"""The stacked LSTM of eq. 5, with dropout and residual connections between layers (§4.4)."""

import tensorflow as tf


class StackedLSTM(tf.keras.layers.Layer):
    """x: [B, T, D_in], length: [B] -> [B, T, units].

    Layer l > 0 adds its input to its output (residual); the first layer's output has no residual
    because its input width differs. Dropout applies to each layer's output when training.

    Sequences are right-padded (positions t >= length, length >= 1). An LSTM is causal, so the
    outputs at t < length never see the padding, and no Keras mask is passed: with one the
    valid outputs and gradients are the same (to 1e-6 in tests/test_layers.py; bit for bit on
    the CPU it was checked on) and each time step adds selects (about 10 % of the LSTM's time
    on a CPU). Outputs at padded positions are meaningless; everything downstream masks them
    by `length`.
    """

    def __init__(self, units: int, num_layers: int = 2, dropout: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.num_layers = num_layers
        self.dropout_rate = dropout
        self.cells = [
            tf.keras.layers.LSTM(
                units,
                return_sequences=True,
                kernel_initializer="orthogonal",
                recurrent_initializer="orthogonal",
                name=f"lstm_{i}",
            )
            for i in range(num_layers)
        ]
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, length: tf.Tensor, training=None) -> tf.Tensor:
        del length  # right padding: nothing to mask (above)
        h = x
        for i, lstm in enumerate(self.cells):
            out = self.dropout(lstm(h, training=training), training=training)
            h = out if i == 0 else h + out
        return h

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "dropout": self.dropout_rate,
        }
