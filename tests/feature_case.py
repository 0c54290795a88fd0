"""A small feature spec and one record of it, in a module that does not import TensorFlow (the
subprocess tests of test_features.py check what encoding loads)."""

from sdm_tf.core import features as F

SPEC = F.DatasetSpec(
    item_features=("item", "leaf_category", "brand"),
    profile_features=("age",),
    vocab_sizes={"item": 10, "leaf_category": 5, "brand": 4, "age": 3},
    next_n=2,
)


def _record():
    return {
        F.USER_ID: "u1",
        F.LENGTH: 2,
        "short_item": [2, 3],
        "short_leaf_category": [2, 2],
        "short_brand": [3, 1],
        "long_item": [4],
        "long_leaf_category": [],
        "long_brand": [2],
        "profile_age": 2,
        F.LABEL: [3, 4],
        F.LABEL_NEXT_N: [3, 4, 4, 0],
        F.PRIOR: [5, 4],
    }
