"""benchmarks/serving_parity.py: requests from a split's raw events, and list comparison."""

from benchmarks import serving_parity as P


def test_requests_carry_the_raw_events_and_the_rules_flags(tmp_path):
    path = tmp_path / "test_queries.csv"
    path.write_text(
        "user_id,item_id,timestamp,category,brand,shop,behavior\n"
        "u1,a,100,c1,,,pv\n"
        "u2,b,50.0,,,,pv\n"
        "u1,b,160,c2,br,,pv\n"
    )
    bodies = P.requests_of(str(path), "frequent", 7)
    assert bodies["u1"] == {
        "user_id": "u1",
        "events": [
            {"item": "a", "timestamp": 100, "category": "c1"},
            {"item": "b", "timestamp": 160, "category": "c2", "brand": "br"},
        ],
        "k": 7,
        "history_first": True,
        "history_order": "frequent",
    }
    assert bodies["u2"]["events"] == [{"item": "b", "timestamp": 50}]
    assert P.requests_of(str(path), "kept", 7)["u2"] == {
        "user_id": "u2", "events": [{"item": "b", "timestamp": 50}], "k": 7,
    }  # fmt: skip
    assert P.requests_of(str(path), "excluded", 7)["u2"]["exclude_seen"] is True


def test_near_tie_runs_by_hand():
    # Gaps: 1e-6 (tied at tolerance 1e-5 x 5), 1.0, 0, 2.0: runs [0, 2), [2, 4), [4, 5).
    scores = [5.000001, 5.0, 4.0, 4.0, 2.0]
    assert P.near_tie_blocks(scores, 1e-5) == [(0, 2), (2, 4), (4, 5)]
    assert P.near_tie_blocks(scores, 0.0) == [(0, 1), (1, 2), (2, 4), (4, 5)]
    # Unscored positions (history first) never tie, not even with each other.
    assert P.near_tie_blocks([None, None, 3.0, 3.0], 1e-5) == [(0, 1), (1, 2), (2, 4)]


def test_lists_equal_up_to_the_order_of_near_ties():
    served, scores = ["a", "b", "c", "d", "e"], [5.000001, 5.0, 4.0, 4.0, 2.0]
    assert P.tied(served, scores, ["b", "a", "d", "c"], 1e-5)  # swaps inside runs
    assert P.tied(served, scores, ["a", "b", "d"], 1e-5)  # k = 3 ends inside the run of c, d
    assert not P.tied(served, scores, ["a", "c", "b"], 1e-5)  # c moved out of its run
    assert not P.tied(served, scores, ["b", "a"], 1e-7)  # 1e-6 apart: not a tie at 1e-7
    assert not P.tied(served, scores, ["a", "b", "x"], 1e-5)  # an item the service did not rank


def test_compare_counts_identical_tied_differing_and_fallbacks():
    ours = {"u1": ["a", "b"], "u2": ["b", "a"], "u3": ["a", "c"], "u4": ["p", "q"], "u5": ["q"]}
    answer = {"items": ["a", "b", "c"], "scores": [1.0, 1.0, 0.5], "fallback": False}
    popular = {"items": ["p", "q"], "scores": [None, None], "fallback": True}
    served = {"u1": answer, "u2": answer, "u3": answer, "u4": popular}
    out = P.compare(ours, served, 2, 1e-5)
    assert out == {
        "users": 3, "identical": 1, "tied": 1, "fallback_users": 1, "fallback_identical": 1,
        "differ": 1, "differing_users": ["u3"],
    }  # fmt: skip
    # A fallback list that differs is a mismatch: no scores, so no ties.
    out = P.compare(ours, {"u5": popular}, 1, 1e-5)
    assert (out["fallback_users"], out["fallback_identical"], out["differ"]) == (1, 0, 1)
