"""benchmarks/session_pickle.py: SR-GNN's pickled sessions as prepare.py's Diginetica CSV."""

import collections
import json
import pickle

import pytest

from benchmarks import session_pickle
from tests.conftest import prepare_split


def test_each_session_gets_its_target_and_its_own_time_span(tmp_path):
    src = tmp_path / "train.txt"
    src.write_bytes(pickle.dumps(([[5, 6], [7]], [8, 9])))
    dst = tmp_path / "views.csv"
    assert session_pickle.write(str(src), str(dst), click_seconds=30_000) == 5
    # The longest session (3 clicks with its target) spans 90,000 s: session 2 starts on day 2
    # at 3,600 s, its target 30,000 s later.
    assert dst.read_text().splitlines() == [
        "sessionId;userId;itemId;timeframe;eventdate",
        "1;NA;5;0;2016-01-01",
        "1;NA;6;30000000;2016-01-01",
        "1;NA;8;60000000;2016-01-01",
        "2;NA;7;3600000;2016-01-02",
        "2;NA;9;33600000;2016-01-02",
    ]


@pytest.mark.parametrize(
    "payload, error",
    [
        (collections.OrderedDict(a=1), "only lists of ints"),
        (([[1, 2]], [3, 4]), "equal length"),
        ((1, 2), "equal length"),
    ],
)
def test_refuses_classes_and_unpaired_targets(payload, error):
    with pytest.raises((pickle.UnpicklingError, ValueError), match=error):
        session_pickle.load(pickle.dumps(payload))


def test_prepare_reads_it_as_one_user_per_session(tmp_path):
    src = tmp_path / "train.txt"
    # Items 1 and 3 are in every session, 2 in two, 4 in one (dropped at --min-item-count 2).
    src.write_bytes(pickle.dumps(([[1, 2, 3], [2, 1], [3, 4]], [1, 3, 1])))
    session_pickle.write(str(src), str(tmp_path / "views.csv"))
    prepare_split(tmp_path / "split", "diginetica", tmp_path / "views.csv", "--min-item-count", "2")
    info = json.loads((tmp_path / "split" / "split.json").read_text())
    # Sessions 1 and 2 keep 4 and 3 clicks (each its last as the truth); session 3 keeps 2.
    assert (info["users"], info["items"], info["test_users"]) == (3, 3, 2)
    truth = [
        json.loads(x) for x in (tmp_path / "split" / "test_truth.jsonl").read_text().splitlines()
    ]
    assert sorted((t["user_id"], t["items"]) for t in truth) == [("1", ["1"]), ("2", ["3"])]
