"""sdm_tf: the SDM model, its feature spec and its input pipeline.

TFRS and ParameterServerStrategy's `fit` need Keras 2 (tf-keras), so the legacy switch is set
before anything imports TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
