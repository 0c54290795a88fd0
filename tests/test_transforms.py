"""TestPipeline tests of each composite transform."""

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import examples as X
from pipelines import read as R
from pipelines import vocab as V
from sdm_tf.core import features as F
from sdm_tf.core import sessions as S
from sdm_tf.core.events import Event, InputFormat

T0 = 1_511_539_200


def ev(user, item, ts, cat="", offset=0):
    return Event(user, item, ts, "", "pv", (cat, "", "", ""), ("f", offset))


def test_read_events_validates_and_buckets(tmp_path):
    path = tmp_path / "log.csv"
    rows = [
        b"1,10,c1,pv,1511539200",
        b"1,11,c1,pv,1511539300",
        b"2,10,c1,pv,1511539400",
        b"3,10,c1,pv",  # wrong column count
        b"4,,c1,pv,1511539200",  # empty item
        b"5,10,c1,pv,yesterday",  # non-numeric timestamp
        b"6,10,c1,pv,99999999999",  # absurd
        b"7,10,c\xff,pv,1511539200",  # bad UTF-8
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    # Tiny chunks so that ranges split lines: every row must still be read exactly once.
    with TestPipeline() as p:
        out = p | R.ReadEvents(str(path), InputFormat("taobao"), chunk_bytes=7)
        users = (
            out["events"]
            | beam.FlatMap(lambda kv: [(e.user, e.item, e.timestamp) for e in kv[1]])
            | "SortU" >> beam.combiners.ToList()
            | beam.Map(sorted)
        )
        assert_that(
            users,
            equal_to([[("1", "10", 1511539200), ("1", "11", 1511539300), ("2", "10", 1511539400)]]),
            label="events",
        )
        # Every batch holds one user's events, keyed by that user (no multi-user buckets).
        keyed = out["events"] | beam.Map(lambda kv: all(e.user == kv[0] for e in kv[1]))
        all_keyed = keyed | "AllKeyed" >> beam.combiners.ToList() | beam.Map(all)
        assert_that(all_keyed, equal_to([True]), label="keyed")
        reasons = out[R.DEAD] | beam.Map(lambda s: json.loads(s)["reason"])
        assert_that(
            reasons,
            equal_to(
                ["wrong_column_count", "empty_id", "non_numeric_timestamp", "absurd_timestamp"]
                + ["bad_utf8"]
            ),
            label="dead",
        )
        totals = out[R.STATS] | beam.CombineGlobally(V.CounterCombineFn())
        assert_that(
            totals | beam.Map(lambda c: (c["input_rows"], c["accepted_rows"], c["rejected_rows"])),
            equal_to([(8, 3, 5)]),
            label="stats",
        )


def test_read_events_csv_with_header_and_jsonl(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("user_id,item_id,timestamp,category\nu,i,100,c\nu,j,50,d\n")
    jsonl_path = tmp_path / "b.jsonl"
    jsonl_path.write_text('{"u": "v", "i": "k", "t": 7}\nnot json\n{"u": "v", "t": 8}\n')
    with TestPipeline() as p:
        a = p | "A" >> R.ReadEvents(str(csv_path), InputFormat("csv", has_header=True))
        got_a = a["events"] | "FA" >> beam.FlatMap(lambda kv: [(e.item, e.sides) for e in kv[1]])
        assert_that(
            got_a, equal_to([("i", ("", "c", "", "")), ("j", ("", "d", "", ""))]), label="csv"
        )
        fmt = InputFormat("jsonl", columns={"user": "u", "item": "i", "timestamp": "t"})
        b = p | "B" >> R.ReadEvents(str(jsonl_path), fmt)
        got_b = b["events"] | "FB" >> beam.FlatMap(lambda kv: [e.item for e in kv[1]])
        assert_that(got_b, equal_to(["k"]), label="jsonl")
        dead_b = b[R.DEAD] | "RB" >> beam.Map(lambda s: json.loads(s)["reason"])
        assert_that(dead_b, equal_to(["bad_json", "missing_column"]), label="jsonl_dead")


def test_group_by_user_sorts_and_dedupes():
    batches = [  # a user's batches from two byte ranges
        ("u", [ev("u", "b", 20, offset=2)]),
        ("v", [ev("v", "x", 5)]),
        ("u", [ev("u", "a", 10, offset=1), ev("u", "b", 20, offset=3)]),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(batches) | R.GroupByUser()
        got = out["users"] | beam.Map(lambda kv: (kv[0], [e.item for e in kv[1]]))
        assert_that(got, equal_to([("u", ["a", "b"]), ("v", ["x"])]), label="users")
        dups = out[R.STATS] | beam.CombineGlobally(V.CounterCombineFn())
        assert_that(dups, equal_to([{"duplicate_events": 1}]), label="dups")


def test_group_by_user_drops_users_over_the_row_bound_while_grouping():
    batches = [  # u: 2 + 2 rows from two ranges (over the bound 3); v: 3 rows (at it)
        ("u", [ev("u", "a", 1, offset=1), ev("u", "b", 2, offset=2)]),
        ("v", [ev("v", "x", i, offset=i) for i in range(3)]),
        ("u", [ev("u", "c", 3, offset=3), ev("u", "d", 4, offset=4)]),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(batches) | R.GroupByUser(max_rows=3)
        got = out["users"] | beam.Map(lambda kv: (kv[0], [e.item for e in kv[1]]))
        assert_that(got, equal_to([("v", ["x", "x", "x"])]), label="users")
        stats = out[R.STATS] | beam.CombineGlobally(V.CounterCombineFn())
        expected = {"dropped_raw_heavy_users": 1, "dropped_raw_heavy_user_rows": 4}
        assert_that(stats, equal_to([expected]), label="stats")


def test_filter_events_drops_rare_items_then_heavy_users():
    users = [
        ("u1", [ev("u1", "pop", 1), ev("u1", "rare", 2)]),
        ("u2", [ev("u2", "pop", 1)]),
        ("u3", [ev("u3", "pop", i) for i in range(3)]),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(users) | V.FilterEvents(min_item_count=2, max_user_events=2)
        got = out["users"] | beam.Map(lambda kv: (kv[0], [e.item for e in kv[1]]))
        assert_that(got, equal_to([("u1", ["pop"]), ("u2", ["pop"])]), label="users")
        stats = out[R.STATS] | beam.CombineGlobally(V.CounterCombineFn())
        assert_that(
            stats,
            equal_to(
                [
                    {
                        "dropped_rare_item_events": 1,
                        "dropped_heavy_users": 1,
                        "dropped_heavy_user_events": 3,
                    }
                ]
            ),
            label="stats",
        )


def test_build_vocabularies_orders_by_descending_frequency():
    users = [
        ("u1", [ev("u1", "a", 1, "c1"), ev("u1", "b", 2, "c2")]),
        ("u2", [ev("u2", "b", 1, "c2"), ev("u2", "b", 5, "c2"), ev("u2", "c", 6, "")]),
    ]
    profiles = [("u1", {"age": "3"}), ("u2", {"age": "3"}), ("u3", {"age": "5"})]
    with TestPipeline() as p:
        vocabs = p | beam.Create(users) | V.BuildVocabularies(p | "P" >> beam.Create(profiles))
        got = vocabs | beam.Map(
            lambda v: (
                v["features"][F.ITEM],
                v["features"]["leaf_category"],
                v["features"]["age"],
                v["item_features"],
                v["item_sides"]["b"][0],
            )
        )
        assert_that(
            got,
            equal_to(
                [
                    (
                        [("b", 3), ("a", 1), ("c", 1)],
                        [("c2", 3), ("c1", 1)],
                        [("3", 2), ("5", 1)],
                        [F.ITEM, "leaf_category"],
                        "c2",
                    )
                ]
            ),
        )


def _vocabs():
    return {
        "features": {F.ITEM: [("a", 5), ("b", 4), ("c", 3)], "age": [("3", 1)]},
        "item_features": [F.ITEM],
        "profile_features": ["age"],
        "item_sides": {},
    }


def _parse(kind):
    def parse(serialized):
        import tensorflow as tf

        ex = tf.train.Example.FromString(serialized)
        f = ex.features.feature
        return (
            list(f[F.short_key(F.ITEM)].int64_list.value),
            (
                list(f[F.LABEL].int64_list.value)
                if kind == F.TRAIN
                else list(f[F.TRUTH].bytes_list.value)
            ),
            f[F.profile_key("age")].int64_list.value[0],
        )

    return parse


def test_make_examples_loo():
    events = [ev("u", x, T0 + 10 * i) for i, x in enumerate(["a", "b", "c", "b"])]
    grouped = [("u", {"events": [events], "profile": [{"age": "3"}]})]
    with TestPipeline() as p:
        vocabs = p | "V" >> beam.Create([_vocabs()])
        out = p | beam.Create(grouped) | X.MakeExamples(S.SessionConfig(next_n=2), "loo", vocabs)
        # train: the history a,b,c -> inputs [a, b], labels [b, c]; eval: fed a,b,c, truth b.
        assert_that(
            out[F.TRAIN] | "PT" >> beam.Map(_parse(F.TRAIN)),
            equal_to([([2, 3], [3, 4], 2)]),
            label="train",
        )
        assert_that(
            out[F.EVAL] | "PE" >> beam.Map(_parse(F.EVAL)),
            equal_to([([2, 3, 4], [b"b"], 2)]),
            label="eval",
        )


def test_make_examples_counts_training_examples_without_long_term_history():
    # Two sessions 2,000 s apart (gap 600): the first has nothing before it; the second has the
    # first (a, b) in its 7-day window. "auto" settings read the count (config.resolve_auto).
    events = [ev("u", x, T0 + t) for x, t in [("a", 0), ("b", 10), ("c", 2000), ("a", 2010)]]
    fn = X.MakeExamplesFn(S.SessionConfig(next_n=2), "none")
    out = list(fn.process(("u", {"events": [events], "profile": [{"age": "3"}]}), _vocabs(), None))
    (stats,) = [o.value for o in out if o.tag == R.STATS]
    assert stats["train_examples"] == 2
    assert stats["train_examples_without_long_term"] == 1
    # Labels: b (after a), then a (after c) -- a is in the second session's bag: a repeat.
    assert stats["train_labels"] == 2 and stats["train_labels_in_input"] == 1


def _inputs_and_labels(serialized):
    import tensorflow as tf

    f = tf.train.Example.FromString(serialized).features.feature
    return list(f[F.short_key(F.ITEM)].int64_list.value), list(f[F.LABEL].int64_list.value)


def test_make_examples_writes_held_out_test_queries_beside_validation():
    # Training events a,b,c,b: loo carves the last b as validation; the test query feeds all four
    # (its history holds each item once, in the order last seen: a, c, b) and asks for c.
    events = [ev("u", x, T0 + 10 * i) for i, x in enumerate(["a", "b", "c", "b"])]
    grouped = [
        ("u", {"events": [events], "test_fed": [events], "test_truth": [["c"]]}),
        ("w", {"test_truth": [["a"]]}),  # a test user with nothing fed: counted, no record
    ]
    with TestPipeline() as p:
        vocabs = p | "V" >> beam.Create([{**_vocabs(), "profile_features": []}])
        out = p | beam.Create(grouped) | X.MakeExamples(S.SessionConfig(next_n=2), "loo", vocabs)

        def fields(serialized):
            import tensorflow as tf

            f = tf.train.Example.FromString(serialized).features.feature
            return (
                list(f[F.short_key(F.ITEM)].int64_list.value),
                list(f[F.TRUTH].bytes_list.value),
                list(f[F.HISTORY].bytes_list.value),
            )

        assert_that(
            out[F.EVAL] | "E" >> beam.Map(fields),
            equal_to([([2, 3, 4], [b"b"], [b"a", b"b", b"c"])]),
            label="validation",
        )
        assert_that(
            out[F.TEST] | "T" >> beam.Map(fields),
            equal_to([([2, 3, 4, 3], [b"c"], [b"a", b"b", b"c", b"b"])]),  # repeats kept
            label="test",
        )
        # train/ stops before the validation target; train_all/ (the final fit) has it.
        assert_that(
            out[F.TRAIN] | "PT" >> beam.Map(_inputs_and_labels),
            equal_to([([2, 3], [3, 4])]),
            label="train",
        )
        assert_that(
            out[F.TRAIN_ALL] | "PA" >> beam.Map(_inputs_and_labels),
            equal_to([([2, 3, 4], [3, 4, 3])]),
            label="train_all",
        )
        counts = (
            out[R.STATS]
            | beam.CombineGlobally(V.CounterCombineFn())
            | beam.Map(
                lambda c: (
                    c["test_examples"],
                    c["test_users_without_history"],
                    c["train_all_examples"],
                )
            )
        )
        assert_that(counts, equal_to([(1, 1, 1)]), label="stats")


def test_make_examples_time_protocol_uses_the_global_last_day():
    day = T0 + 2 * S.DAY
    u = [ev("u", "a", T0), ev("u", "b", T0 + 10)] + [
        ev("u", x, day + i) for i, x in enumerate("abcc")
    ]
    v = [ev("v", "a", T0), ev("v", "c", T0 + 5)]  # inactive on the test day
    grouped = [("u", {"events": [u]}), ("v", {"events": [v]})]
    with TestPipeline() as p:
        vocabs = p | "V" >> beam.Create([_vocabs()])
        users = p | "U" >> beam.Create([("u", u), ("v", v)])
        out = (
            p
            | beam.Create(grouped)
            | X.MakeExamples(
                S.SessionConfig(next_n=2), "time", vocabs, test_day=users | X.TestDayStart()
            )
        )

        def short_and_truth(serialized):
            import tensorflow as tf

            f = tf.train.Example.FromString(serialized).features.feature
            return list(f[F.short_key(F.ITEM)].int64_list.value), list(f[F.TRUTH].bytes_list.value)

        # u: 4 events on the last day, 1 fed; the fed session is [a] (day-old events are long-term).
        assert_that(
            out[F.EVAL] | beam.Map(short_and_truth), equal_to([([2], [b"b", b"c"])]), label="eval"
        )
        n_train = out[F.TRAIN] | beam.combiners.Count.Globally()
        assert_that(n_train, equal_to([2]), label="train")


def test_time_protocol_counts_frequencies_before_the_test_day():
    # "z" is the most frequent item only thanks to the held-out day: it must not lead the
    # vocabulary (its order is the sampler's and the popularity baseline's).
    day = T0 + 2 * S.DAY
    u = [ev("u", "a", T0), ev("u", "a", T0 + 10), ev("u", "b", T0 + 20)]
    u += [ev("u", "z", day + i) for i in range(5)]
    with TestPipeline() as p:
        users = p | beam.Create([("u", u)])
        vocabs = users | V.BuildVocabularies(before=users | X.TestDayStart())
        got = vocabs | beam.Map(lambda v: v["features"][F.ITEM])
        assert_that(got, equal_to([[("a", 2), ("b", 1)]]))


def test_read_events_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "uid": ["u", "u", ""],
            "iid": ["a", "b", "c"],
            "ts": [10, 20, 30],
            "brand": ["x", None, "y"],
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    fmt = InputFormat(
        "parquet", columns={"user": "uid", "item": "iid", "timestamp": "ts", "brand": "brand"}
    )
    with TestPipeline() as p:
        out = p | R.ReadEvents(str(tmp_path / "log.parquet"), fmt)
        got = out["events"] | beam.FlatMap(lambda kv: [(e.item, e.sides[2]) for e in kv[1]])
        assert_that(got, equal_to([("a", "x"), ("b", "")]), label="events")
        dead = out[R.DEAD] | beam.Map(lambda s: json.loads(s)["reason"])
        assert_that(dead, equal_to(["empty_id"]), label="dead")


def test_read_table_parses_rows_and_rejects_bad_ones(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,brand,shop\ni1,b1,s1\ni2,b2\n,b3,s3\ni4,b4,s4\n")
    with TestPipeline() as p:
        out = p | R.ReadTable(str(path), "item_id", {"brand": "brand"}, "item")
        assert_that(
            out["rows"], equal_to([("i1", {"brand": "b1"}), ("i4", {"brand": "b4"})]), label="rows"
        )
        reasons = out[R.DEAD] | beam.Map(lambda s: json.loads(s)["reason"])
        assert_that(reasons, equal_to(["item:wrong_column_count", "item:empty_id"]), label="dead")


def test_apply_item_table_overrides_sides():
    e = ev("u", "i1", 1, cat="old")
    _, (got,) = R.apply_item_table(("u", [e]), {"i1": {"brand": "b9"}})
    assert got.sides == ("old", "", "b9", "")
