"""benchmarks/slices.py: two systems' metrics on slices of a split's users, by hand."""

import json
import math

import pytest

from benchmarks import slices as SL

TRAIN = {"u1": ["a", "b", "c"], "u2": ["b", "c", "a"], "u3": ["c", "d"]}
# Queries need not be the training events (a time split's are not): u2's has 4 events.
QUERIES = {"u1": ["a", "b", "c"], "u2": ["b", "c", "b", "a"], "u3": ["c", "d"]}
TRUTH = {"u1": ["d"], "u2": ["b"], "u3": ["a"], "u4": ["e"], "u5": []}
A = {"u1": ["d", "x"], "u2": ["x", "b"], "u3": ["x", "y"], "u4": ["e"]}
B = {"u1": ["x", "y"], "u2": ["b"], "u3": ["a"]}


def test_bucket_labels():
    assert [SL.bucket(v, SL.QUERY_EDGES) for v in (0, 3, 4, 5, 7, 11, 12, 400)] == [
        "0–3", "0–3", "4", "5", "6–7", "8–11", "12+", "12+",
    ]  # fmt: skip
    assert [SL.bucket(v, SL.COUNT_EDGES) for v in (0, 1, 4, 99, 100)] == [
        "0", "1–4", "1–4", "50–99", "100+",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="below the first edge"):
        SL.bucket(-1, SL.QUERY_EDGES)


def test_user_slices_by_hand():
    # Training pairs: (a, b), (b, c), (c, a), (c, d); counts a 2, b 2, c 3, d 1, e 0.
    got = SL.user_slices(TRAIN, QUERIES, TRUTH)
    assert set(got) == {"u1", "u2", "u3", "u4"}  # u5 has no truth item
    follows = {u: s["truth follows the last query item"] for u, s in got.items()}
    # u1: c then d; u2: a then b; u3: d then a never; u4: no query at all.
    assert follows == {"u1": "yes", "u2": "yes", "u3": "no", "u4": "no"}
    assert {u: s["query events"] for u, s in got.items()} == {
        "u1": "0–3", "u2": "4", "u3": "0–3", "u4": "0–3",
    }  # fmt: skip
    assert {u: s["truth's training count"] for u, s in got.items()} == {
        "u1": "1–4", "u2": "1–4", "u3": "1–4", "u4": "0",
    }  # fmt: skip


def test_compare_by_hand():
    rows = SL.compare(TRUTH, {"A": A, "B": B}, SL.user_slices(TRAIN, QUERIES, TRUTH), k=2)
    by = {(r["slice"], r["label"]): r for r in rows}
    second = 1 / math.log2(3)  # a hit at rank 2
    yes = by["truth follows the last query item", "yes"]  # u1, u2
    assert yes["users"] == 2
    assert yes["A"] == {"HitRate@2": 1.0, "NDCG@2": pytest.approx((1 + second) / 2)}
    assert yes["B"] == {"HitRate@2": 0.5, "NDCG@2": 0.5}
    # A's NDCG@2 over the four users is (1 + second + 0 + 1) / 4, B's (0 + 1 + 1 + 0) / 4: the
    # "yes" slice holds all of the difference, the "no" slice (u3 for B, u4 for A) none.
    assert yes["share"] == pytest.approx(((1 + second) / 2 - 0.5) * 2 / 4)
    assert by["truth follows the last query item", "no"]["share"] == 0.0
    for name in SL.SLICES:  # every slicing splits the same overall difference
        total = sum(r["share"] for r in rows if r["slice"] == name)
        assert total == pytest.approx((2 + second) / 4 - 0.5)
    # Labels in ascending order within a slicing.
    assert [r["label"] for r in rows if r["slice"] == "truth's training count"] == ["0", "1–4"]
    assert [r["label"] for r in rows if r["slice"] == "query events"] == ["0–3", "4"]


def test_command_line(tmp_path, capsys):
    split = tmp_path / "split"
    split.mkdir()
    header = "user_id,item_id,timestamp\n"
    (split / "events_train.csv").write_text(
        header
        + "".join(f"{u},{i},{t}\n" for u, items in TRAIN.items() for t, i in enumerate(items))
    )
    (split / "test_queries.csv").write_text(
        header
        + "".join(f"{u},{i},{t}\n" for u, items in QUERIES.items() for t, i in enumerate(items))
    )
    (split / "test_truth.jsonl").write_text(
        "".join(json.dumps({"user_id": u, "items": t}) + "\n" for u, t in TRUTH.items())
    )
    paths = []
    for name, preds in (("a", A), ("b", B)):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text(
            "".join(json.dumps({"user_id": u, "items": p}) + "\n" for u, p in preds.items())
        )
    out = tmp_path / "rows.json"
    SL.main([str(split), *map(str, paths), "--names", "A", "B", "--k", "2", "--json", str(out)])
    rows = json.loads(out.read_text())
    expected = SL.compare(TRUTH, {"A": A, "B": B}, SL.user_slices(TRAIN, QUERIES, TRUTH), 2)
    assert rows == json.loads(json.dumps(expected))
    assert "truth follows the last query item" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one name for two files
        SL.main([str(split), *map(str, paths), "--names", "A"])
