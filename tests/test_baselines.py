"""Popularity and item-CF, checked by hand and against ../shared/bench/itemcf.py."""

import math
import subprocess
import sys

import pytest

from launch import bench_lib as bench_split
from sdm_tf.train import baselines as B
from tests.conftest import shared_path, taobao_time_split


def test_popularity_orders_by_count_and_excludes_history():
    train = {"u": ["a", "b", "a"], "v": ["c", "a", "b"]}
    assert B.popularity(train) == ["a", "b", "c"]
    got = B.popularity_predictions(["a", "b", "c"], {"x": ["a"]}, ["x", "y"], 2, True)
    assert got == {"x": ["b", "c"], "y": ["a", "b"]}


def test_itemcf_scores_by_hand():
    # Window 5 over u: a b c and v: a c. Counts a=2, b=1, c=2; co(a,b)=1, co(a,c)=2, co(b,c)=1.
    cf = B.ItemCF({"u": ["a", "b", "c"], "v": ["a", "c"]})
    # History [a, b]: b is the most recent (w=1), a next (w=1/2).
    # c: 1 * 1/sqrt(1*2) + 1/2 * 2/sqrt(2*2) = 0.7071 + 0.5; a: 1 * 1/sqrt(1*2) = 0.7071;
    # b: 1/2 * 1/sqrt(2*1) = 0.3536.
    assert cf.neighbours("a", 5) == [("c", 2, 2.0), ("b", 1, math.sqrt(2))]
    assert cf.recommend(["a", "b"], k=3) == ["c", "a", "b"]
    # Excluded history: only c is scored; the popular tail has nothing left to add.
    assert cf.recommend(["a", "b"], k=3, exclude_history=True) == ["c"]
    # An unknown history item scores nothing: popularity (a and c tie at 2; a was seen first).
    assert cf.recommend(["zz"], k=2) == ["a", "c"]


@pytest.mark.parametrize("exclude", [False, True])
def test_itemcf_matches_the_reference_on_the_taobao_split(tmp_path, exclude):
    reference = shared_path("bench", "itemcf.py")
    split = taobao_time_split(tmp_path / "split", min_item_count=1)
    args = [sys.executable, str(reference), str(split), str(tmp_path / "ref")]
    subprocess.run(args + (["--exclude-seen"] if exclude else []), check=True)
    train = bench_split.read_events(str(split / "events_train.csv"))
    queries = bench_split.read_events(str(split / "test_queries.csv"))
    truth = bench_split.read_truth(str(split / "test_truth.jsonl"))
    ours = B.itemcf_predictions(train, queries, truth, 100, exclude)
    theirs = bench_split.read_truth(str(tmp_path / "ref.itemcf.jsonl"))
    assert ours == theirs
    pop = B.popularity_predictions(B.popularity(train), queries, truth, 100, exclude)
    assert pop == bench_split.read_truth(str(tmp_path / "ref.pop.jsonl"))
