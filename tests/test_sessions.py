"""The session rules on hand-built cases."""

import pytest

from sdm_tf.core import features as F
from sdm_tf.core import sessions as S
from sdm_tf.core.events import Event

CFG = S.SessionConfig()
T0 = 1_511_539_200


def ev(item, ts, session="", offset=None, cat="c", user="u"):
    return Event(
        user,
        str(item),
        ts,
        session,
        "pv",
        (cat, "", "", ""),
        ("f", ts if offset is None else offset),
    )


def lengths(events, cfg=CFG):
    return [len(s) for s in S.sessionize(events, cfg)]


def test_gap_of_exactly_ten_minutes_splits():
    assert lengths([ev(1, T0), ev(2, T0 + 600)]) == [1, 1]


def test_gap_just_under_ten_minutes_merges():
    assert lengths([ev(1, T0), ev(2, T0 + 599)]) == [2]


def test_gaps_are_between_adjacent_events():
    # 3 x 500 s: each gap is short, the span is 25 minutes; one session.
    assert lengths([ev(i, T0 + 500 * i) for i in range(4)]) == [4]


def test_no_gap_rule_makes_one_sequence_in_windows_of_the_cap():
    cfg = S.SessionConfig(session_gap=0, max_session_length=3)
    days = [ev(i, T0 + 30 * S.DAY * i) for i in range(7)]  # a month apart each
    assert lengths(days, cfg) == [3, 3, 1]
    # Session ids still make their own sessions.
    assert lengths([ev(1, T0, "a"), ev(2, T0 + 1, "b"), ev(3, T0 + 2)], cfg) == [1, 2]


def test_sessions_after_long_pause_by_hand():
    week = 7 * S.DAY
    events = [
        ev(1, T0),  # first session: nothing earlier
        ev(2, T0 + week),  # exactly 7 days later: the window is inclusive, not a long pause
        ev(3, T0 + 3 * week),  # 14 days after the last event: a long pause
        ev(4, T0 + 3 * week + 60),  # same session
        ev(5, T0 + 5 * week + 1),  # 14 days + 1 s: a long pause
    ]
    assert lengths(events) == [1, 1, 2, 1]
    assert S.sessions_after_long_pause(events, CFG) == 2
    # A capped session's second chunk has its first chunk just before it.
    assert S.sessions_after_long_pause(events, S.SessionConfig(max_session_length=2)) == 2
    # Without the gap rule only a chunk that starts after a long pause counts: [1 2] [3 4] [5].
    assert (
        S.sessions_after_long_pause(events, S.SessionConfig(session_gap=0, max_session_length=2))
        == 2
    )
    assert S.sessions_after_long_pause(events, S.SessionConfig(long_term_days=30)) == 0


def test_auto_session_gap_drops_the_gap_rule_from_one_tenth_of_sessions_after_long_pauses():
    assert S.auto_session_gap({"sessions": 1000, "sessions_after_long_pause": 99}) == 600
    assert S.auto_session_gap({"sessions": 1000, "sessions_after_long_pause": 100}) == 0
    assert S.auto_session_gap({"sessions": 0, "sessions_after_long_pause": 0}) == 600
    assert S.long_pause_share({"sessions": 8, "sessions_after_long_pause": 2}) == 0.25


def test_session_id_change_inside_a_short_gap_splits():
    assert lengths([ev(1, T0, "a"), ev(2, T0 + 10, "b")]) == [1, 1]


def test_same_session_id_merges_across_a_long_gap():
    assert lengths([ev(1, T0, "a"), ev(2, T0 + 7200, "a")]) == [2]


def test_missing_session_id_falls_back_to_the_gap_rule():
    assert lengths([ev(1, T0, "a"), ev(2, T0 + 10, "")]) == [2]
    assert lengths([ev(1, T0, "a"), ev(2, T0 + 900, "")]) == [1, 1]


def test_fifty_events_make_one_session_fifty_one_make_two():
    assert lengths([ev(i, T0 + i) for i in range(50)]) == [50]
    assert lengths([ev(i, T0 + i) for i in range(51)]) == [50, 1]
    assert lengths([ev(i, T0 + i) for i in range(101)]) == [50, 50, 1]


def test_equal_timestamps_keep_file_order():
    events = [ev("b", T0, offset=20), ev("a", T0, offset=10), ev("c", T0 - 5, offset=30)]
    assert [e.item for e in S.sort_events(events)] == ["c", "a", "b"]


def test_unsorted_input_sessionizes_like_sorted_input():
    events = [ev(i, T0 + t) for i, t in enumerate([0, 100, 5000, 5100, 5200, 9000])]
    shuffled = [events[k] for k in (3, 0, 5, 1, 4, 2)]
    assert S.sessionize(S.sort_events(shuffled), CFG) == S.sessionize(events, CFG)
    assert lengths(events) == [2, 3, 1]


def test_dedupe_collapses_exact_duplicates_only():
    a = ev(1, T0, offset=1)
    dup = ev(1, T0, offset=2)  # same event at another file position
    other_time = ev(1, T0 + 1)
    kept, dropped = S.dedupe([a, dup, other_time])
    assert kept == [a, other_time] and dropped == 1


def test_interleaved_session_ids_are_one_session_each():
    # Two tabs: ids a and b alternate 10 s apart; each id is one session.
    events = [ev(i, T0 + 10 * i, "ab"[i % 2]) for i in range(4)]
    sessions = S.sessionize(events, CFG)
    assert [[e.item for e in s] for s in sessions] == [["0", "2"], ["1", "3"]]


def _encoder(items=("1", "2", "3", "4", "5", "6"), cats=("c", "d")):
    vocabs = {
        F.ITEM: {v: i + F.NUM_RESERVED for i, v in enumerate(items)},
        "leaf_category": {v: i + F.NUM_RESERVED for i, v in enumerate(cats)},
    }
    return S.Encoder(vocabs, (F.ITEM, "leaf_category"))


FEATURES = (F.ITEM, "leaf_category")


def test_long_term_window_boundary_is_seven_days_inclusive():
    start = T0 + 8 * S.DAY
    history = [ev(1, start - 7 * S.DAY - 1), ev(2, start - 7 * S.DAY), ev(3, start - 1)]
    bags = S.raw_bags(history, len(history), start, FEATURES, CFG)
    # item "1" is one second too old; most recent first.
    assert bags[F.ITEM] == ["3", "2"]
    assert bags["leaf_category"] == ["c"]


def test_long_term_bag_keeps_most_recent_distinct_values_up_to_size():
    cfg = S.SessionConfig(long_term_size=2)
    start = T0 + S.DAY
    history = [ev(1, T0), ev(2, T0 + 10), ev(1, T0 + 20), ev(3, T0 + 30)]
    bags = S.raw_bags(history, len(history), start, FEATURES, cfg)
    assert bags[F.ITEM] == ["3", "1"]  # "2" is past the cap


def test_long_term_excludes_events_at_or_after_the_session_start():
    history = [ev(1, T0), ev(2, T0 + 100)]
    assert S.raw_bags(history, 2, T0 + 100, FEATURES, CFG)[F.ITEM] == ["1"]


def test_missing_side_values_are_padding_and_stay_out_of_the_bags():
    enc = _encoder()
    events = [ev(1, T0, cat=""), ev(2, T0 + 10, cat="d"), ev(3, T0 + 5000, cat="")]
    assert enc.ids(events, "leaf_category") == [F.PAD_ID, 3, F.PAD_ID]
    assert S.raw_bags(events, 2, T0 + 5000, FEATURES, CFG)["leaf_category"] == ["d"]
    q = S.build_query(events, CFG, FEATURES)
    assert q.short["leaf_category"] == [""] and q.long["leaf_category"] == ["d"]


def test_train_records_labels_and_next_n_by_hand():
    enc = _encoder()
    cfg = S.SessionConfig(next_n=2)
    # session 1: items 1,2,3 ; session 2 (an hour later): items 4,5 ; session 3: single item 6.
    events = [ev(1, T0), ev(2, T0 + 10), ev(3, T0 + 20), ev(4, T0 + 3600), ev(5, T0 + 3610)]
    events.append(ev(6, T0 + 9000))
    records, lens = S.train_records("u", events, enc, cfg, {"age": 3})
    assert lens == [3, 2, 1]
    assert len(records) == 2  # the single-event session gives no example
    r1, r2 = records
    assert r1[F.LENGTH] == 2
    assert r1[F.short_key(F.ITEM)] == [2, 3]
    assert r1[F.LABEL] == [3, 4]
    assert r1[F.LABEL_NEXT_N] == [3, 4, 4, 0]
    assert r1[F.long_key(F.ITEM)] == []
    assert r1[F.profile_key("age")] == 3
    assert r2[F.short_key(F.ITEM)] == [5] and r2[F.LABEL] == [6] and r2[F.LABEL_NEXT_N] == [6, 0]
    assert r2[F.long_key(F.ITEM)] == [4, 3, 2]  # session 1, most recent first
    # The user's distinct items before each session, most recent first (ids: item + 1).
    assert r1[F.PRIOR] == [] and r2[F.PRIOR] == [4, 3, 2]
    capped, _ = S.train_records("u", events, enc, S.SessionConfig(next_n=2, prior_size=2), {})
    assert capped[1][F.PRIOR] == [4, 3]


def test_the_prior_reaches_past_the_long_term_window_and_keeps_distinct_items():
    enc = _encoder()
    # Item 1 twice, 30 days back (outside the 7-day bag), then a session a day later.
    old = [ev(1, T0), ev(2, T0 + 10), ev(1, T0 + 20)]
    events = old + [ev(3, T0 + 30 * 86400), ev(4, T0 + 30 * 86400 + 10)]
    records, _ = S.train_records("u", events, enc, CFG, {})
    last = records[-1]
    assert last[F.short_key(F.ITEM)] == [4] and last[F.long_key(F.ITEM)] == []
    assert last[F.PRIOR] == [2, 3]  # items 1 (seen last) and 2


def test_a_capped_session_takes_its_earlier_chunk_as_long_term_behaviour():
    # Documented rule: one session of 5 events, cap 3, makes chunks [1 2 3] [4 5]; the second
    # chunk's long-term bags hold the first chunk (the most recent behaviour it does not see).
    cfg = S.SessionConfig(max_session_length=3)
    events = [ev(i, T0 + i) for i in range(1, 6)]
    records, lens = S.train_records("u", events, _encoder(), cfg, {})
    assert lens == [3, 2]
    assert records[1][F.short_key(F.ITEM)] == [5]  # item "4" (id 5) as input
    assert records[1][F.long_key(F.ITEM)] == [4, 3, 2]  # items 3, 2, 1


def test_interleaved_sessions_train_on_their_own_events():
    enc = _encoder()
    events = [ev(i, T0 + 10 * i, "ab"[i % 2]) for i in range(1, 5)]  # b: 1 3, a: 2 4
    records, _ = S.train_records("u", events, enc, CFG, {})
    assert [r[F.LABEL] for r in records] == [[4], [5]]  # b: 1 -> 3; a: 2 -> 4
    # a starts after b's first event: that event is a's long-term behaviour, b's later one not.
    assert records[1][F.long_key(F.ITEM)] == [2]  # item "1"


def test_unknown_values_map_to_oov():
    enc = _encoder()
    assert enc.ids([ev("zzz", T0, cat="q")], F.ITEM) == [F.OOV_ID]
    assert enc.ids([ev("zzz", T0, cat="q")], "leaf_category") == [F.OOV_ID]


def test_query_record_feeds_the_latest_session():
    enc = _encoder()
    fed = [ev(1, T0), ev(2, T0 + 10), ev(3, T0 + 5000), ev(4, T0 + 5010)]
    rec = S.query_record("u", fed, ["5"], enc, CFG, {})
    assert rec[F.short_key(F.ITEM)] == [4, 5]
    assert rec[F.long_key(F.ITEM)] == [3, 2]
    assert rec[F.TRUTH] == ["5"]
    assert S.query_record("u", [], ["5"], enc, CFG, {}) is None


def test_build_query_drops_unknown_items_and_duplicates():
    fed = [ev(1, T0), ev(1, T0), ev("new", T0 + 5), ev(2, T0 + 10)]
    q = S.build_query(fed, CFG, FEATURES, known_items={"1", "2"})
    assert q.short[F.ITEM] == ["1", "2"]
    assert S.build_query([ev("new", T0)], CFG, FEATURES, known_items={"1"}) is None


def test_query_of_a_session_longer_than_the_cap_is_its_last_window():
    # One session of 5 events, cap 3: training chunks are [1 2 3] [4 5]; a query feeds the last
    # 3 events (3 4 5), not the 2-event remainder, and the events before it go to the bags.
    cfg = S.SessionConfig(max_session_length=3)
    fed = [ev(i, T0 + i) for i in range(1, 6)]
    assert lengths(fed, cfg) == [3, 2]
    assert S.query_window(fed, cfg) == [2, 3, 4]
    rec = S.query_record("u", fed, ["9"], _encoder(), cfg, {})
    assert rec[F.LENGTH] == 3 and rec[F.HISTORY] == ["1", "2", "3", "4", "5"]
    assert rec[F.long_key(F.ITEM)] == [3, 2]
    # The history lists every fed event's item in time order, repeats too (the "frequent" rule
    # counts them).
    again = fed + [ev(2, T0 + 6)]
    assert S.query_record("u", again, ["9"], _encoder(), cfg, {})[F.HISTORY] == list("123452")
    # A gap still ends the session: a 1-event last session stays a 1-event query.
    fed2 = fed + [ev(6, T0 + 10_000)]
    assert S.query_window(fed2, cfg) == [5]
    assert S.query_window(fed[:1], cfg) == [0]


def test_query_of_interleaved_sessions_is_the_latest_events_session():
    fed = [ev(i, T0 + 10 * i, "ab"[i % 2]) for i in range(1, 6)]  # b: 1 3 5, a: 2 4
    q = S.build_query(fed, CFG, FEATURES)
    assert q.short[F.ITEM] == ["1", "3", "5"]
    assert q.long[F.ITEM] == []  # nothing before b's first event


def test_split_time_feeds_a_quarter_of_the_test_day():
    day = T0 + 3 * S.DAY
    events = [ev("a", day - 100)] + [ev(x, day + i) for i, x in enumerate("bcdbe")]
    train, fed, truth = S.split_time(events, day)
    assert [e.item for e in train] == ["a"]
    assert [e.item for e in fed] == ["a", "b", "c"]  # ceil(0.25 * 5) = 2 of the day
    assert truth == ["d", "b", "e"]  # distinct, in order
    assert S.split_time([ev("a", day)], day)[1:] == ([], [])


def test_split_loo():
    events = [ev(x, T0 + i) for i, x in enumerate("abc")]
    train, fed, truth = S.split_loo(events)
    assert [e.item for e in fed] == ["a", "b"] and truth == ["c"] and train == fed
    assert S.split_loo(events[:2])[2] == []


def test_config_validation():
    with pytest.raises(ValueError):
        S.SessionConfig(min_session_length=1)
    with pytest.raises(ValueError):
        S.SessionConfig(max_session_length=1)


def test_labels_in_input_counts_repeats_of_the_session_so_far_and_the_bag():
    # Position 0 has seen 5 (+ bag 9): label 6 is new; position 1 has seen 5, 6: label 5
    # repeats; position 2: label 9 is in the bag.
    record = {F.short_key(F.ITEM): [5, 6, 5], F.LABEL: [6, 5, 9], F.long_key(F.ITEM): [9]}
    assert S.labels_in_input(record) == 2
    assert S.labels_in_input({**record, F.long_key(F.ITEM): []}) == 1
    # A label the user had in an earlier session, outside the bag, repeats too.
    assert S.labels_in_input({**record, F.long_key(F.ITEM): [], F.PRIOR: [6, 9]}) == 3
