"""Command-line entry points. Thin: flags in, library calls out."""

import os

# Before anything imports TensorFlow: TFRS and ParameterServerStrategy's fit need Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
