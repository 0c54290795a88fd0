"""Command-line entry points. Thin: flags in, library calls out."""

import logging
import os

from launch.console import BEAM_WORKER_NOISE, DropMessages, quiet_tensorflow_import

# Before anything imports TensorFlow: TFRS and ParameterServerStrategy's fit need Keras 2.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Before anything imports Beam: its BigQuery client warns on the root logger, on import, that
# apitools is missing (sdm reads no BigQuery). Records of other loggers are untouched.
logging.getLogger().addFilter(DropMessages(BEAM_WORKER_NOISE[:1]))
# TensorFlow's load-time lines that no log level reaches (launch/console.py), whenever a
# launcher first imports it.
quiet_tensorflow_import()
