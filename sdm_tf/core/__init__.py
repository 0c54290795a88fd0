"""The pure core: the feature spec, raw events, the session rules and the query builder.

Plain Python (no Beam, TensorFlow or FastAPI imports), so that the Beam pipeline, the model's
input pipeline and the service all build examples and queries from the same code.
"""
