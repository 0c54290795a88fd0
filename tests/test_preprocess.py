"""The whole pipeline: stats, vocabularies, real data, corrupted rows."""

import json
import random

import pytest

from pipelines import examples as X
from pipelines import preprocess, runner, synthetic
from pipelines import read as R
from sdm_tf.core import features as F
from sdm_tf.core.errors import LostDataError
from tests.conftest import IN_MEMORY, TINY, shared_path

REQUIRED_STATS = (
    "input_rows",
    "rejected_rows",
    "rejected_by_reason",
    "events",
    "users",
    "items",
    "sessions",
    "train_examples",
    "eval_examples",
    "avg_session_length",
)


def test_stats_and_vocabularies(preprocessed_dir):
    stats = json.loads((preprocessed_dir / "stats.json").read_text())
    for key in REQUIRED_STATS:
        assert key in stats
    assert stats["input_rows"] == TINY.num_events
    assert stats["accepted_rows"] + stats["rejected_rows"] == stats["input_rows"]
    assert stats["events"] <= stats["input_rows"]
    assert stats["sessions"] >= stats["train_examples"] > 0
    assert stats["avg_session_length"] > 1
    counts = [
        int(line.split("\t")[1])
        for line in (preprocessed_dir / "vocab" / "item.tsv").read_text().splitlines()
    ]
    assert counts == sorted(counts, reverse=True)  # id order = descending frequency
    assert min(counts) >= 5  # the paper's item filter
    assert len(counts) == stats["items"]
    spec = F.DatasetSpec.from_json((preprocessed_dir / "dataset_spec.json").read_text())
    assert spec.vocab_sizes["item"] == stats["items"] + F.NUM_RESERVED
    items = (preprocessed_dir / "items.tsv").read_text().splitlines()
    assert items[0].split("\t")[:3] == ["item", "id", "count"]
    assert items[1].split("\t")[1] == str(F.NUM_RESERVED)


def test_table1_is_printed(preprocessed_dir):
    table = preprocess.table1(json.loads((preprocessed_dir / "stats.json").read_text()), "x")
    assert "# sessions" in table and "avg. session length" in table


def test_runs_on_real_taobao_sample(tmp_path):
    src = shared_path("data", "taobao_sample", "UserBehavior.csv")
    stats = preprocess.run(
        ["--input", str(src), "--output_dir", str(tmp_path), "--min_item_count", "2", *IN_MEMORY]
    )
    assert stats["input_rows"] == 10_000 and stats["rejected_rows"] == 0
    assert stats["users"] > 50 and stats["train_examples"] > 100 and stats["eval_examples"] > 10
    spec = json.loads((tmp_path / "dataset_spec.json").read_text())
    assert spec["item_features"] == ["item", "leaf_category"]


CORRUPTIONS = {
    "wrong_column_count": lambda r: ",".join(r[:4]).encode(),
    "non_numeric_timestamp": lambda r: ",".join(r[:4] + ["2017-11-25T10:00"]).encode(),
    "absurd_timestamp": lambda r: ",".join(r[:4] + ["99999999999"]).encode(),
    "empty_id": lambda r: ",".join([""] + r[1:]).encode(),
    "bad_utf8": lambda r: b"\xff\xfe" + ",".join(r).encode(),
}


def test_corrupted_real_data_rejects_exactly_and_loses_no_valid_row(tmp_path):
    src = shared_path("data", "taobao_sample", "UserBehavior.csv")
    valid = src.read_bytes().splitlines()
    rng = random.Random(0)
    n_bad = len(valid) // 100  # 1% of the file per kind of corruption
    lines = list(valid)
    for corrupt in CORRUPTIONS.values():
        for _ in range(n_bad):
            row = rng.choice(valid).decode().split(",")
            lines.insert(rng.randrange(len(lines) + 1), corrupt(row))
    dirty = tmp_path / "dirty.csv"
    dirty.write_bytes(b"\n".join(lines) + b"\n")
    common = ["--min_item_count", "2", "--chunk_bytes", "65536", *IN_MEMORY]
    got = preprocess.run(["--input", str(dirty), "--output_dir", str(tmp_path / "d"), *common])
    clean = preprocess.run(["--input", str(src), "--output_dir", str(tmp_path / "c"), *common])
    assert got["input_rows"] == len(lines)
    assert got["rejected_by_reason"] == {k: n_bad for k in CORRUPTIONS}
    assert got["rejected_rows"] == n_bad * len(CORRUPTIONS)
    assert got["accepted_rows"] == len(valid)
    # Everything downstream of validation is exactly what the clean file gives.
    for key in ("events", "users", "items", "sessions", "train_examples", "eval_examples"):
        assert got[key] == clean[key], key
    dead = [
        json.loads(line)
        for p in (tmp_path / "d" / "dead_letter").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(dead) == got["rejected_rows"]
    assert {d["reason"] for d in dead} == set(CORRUPTIONS)


def test_synthetic_generator_is_deterministic_and_streams(tmp_path):
    cfg = synthetic.SyntheticConfig(num_events=2000, num_items=200, seed=3)
    synthetic.generate(cfg, str(tmp_path / "a"))
    synthetic.generate(cfg, str(tmp_path / "b"))
    a = (tmp_path / "a" / "events.csv").read_bytes()
    assert a == (tmp_path / "b" / "events.csv").read_bytes()
    assert len(a.splitlines()) == 2000
    other = synthetic.SyntheticConfig(num_events=2000, num_items=200, seed=4)
    synthetic.generate(other, str(tmp_path / "c"))
    assert a != (tmp_path / "c" / "events.csv").read_bytes()


def test_synthetic_sessions_are_separated_by_more_than_the_gap(tmp_path):
    cfg = synthetic.SyntheticConfig(num_events=5000, num_items=300, seed=1)
    cat = synthetic.Catalog(cfg)
    _, events = synthetic.generate_user(cfg, cat, 0, synthetic._affinity(cfg))
    gaps = [b[1] - a[1] for a, b in zip(events, events[1:])]
    assert all(g >= 0 for g in gaps)
    assert any(g >= 900 for g in gaps)  # sessions exist
    assert all(g < 600 or g >= 900 for g in gaps)  # no ambiguous gaps near the threshold


@pytest.mark.parametrize("protocol", ["loo", "none"])
def test_other_protocols(synthetic_dir, tmp_path, protocol):
    stats = preprocess.run(
        [
            "--input", str(synthetic_dir / "events.csv"),
            "--output_dir", str(tmp_path),
            "--eval_protocol", protocol,
            *IN_MEMORY,
        ]
    )  # fmt: skip
    if protocol == "none":
        assert stats["eval_examples"] == 0
    else:
        assert stats["eval_examples"] == stats["users"]


@pytest.mark.parametrize("protocol", ["loo", "queries"])
def test_query_events_take_side_values_from_the_item_table(tmp_path, protocol):
    """Events carry no category; the item table does. Training, validation and test queries
    must all see the table's categories (a query without them fed OOV ids to the model)."""
    import tensorflow as tf

    rows = ["user_id,item_id,timestamp"]
    for u in range(4):
        rows += [f"u{u},{item},{1000 + 10 * t}" for t, item in enumerate("abcd")]
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "queries.csv").write_text("user_id,item_id,timestamp\nu0,a,1000\nu0,b,1010\n")
    (tmp_path / "truth.jsonl").write_text('{"user_id": "u0", "items": ["c"]}\n')
    (tmp_path / "items.csv").write_text("item_id,category\na,x\nb,y\nc,x\nd,y\n")
    out = tmp_path / "out"
    queries = [f"--queries={tmp_path / 'queries.csv'}", f"--truth={tmp_path / 'truth.jsonl'}"]
    preprocess.run(
        [f"--input={tmp_path / 'events.csv'}", "--format=csv", f"--eval_protocol={protocol}",
         f"--item_table={tmp_path / 'items.csv'}", "--min_item_count=1",
         f"--test_queries={tmp_path / 'queries.csv'}", f"--test_truth={tmp_path / 'truth.jsonl'}",
         f"--output_dir={out}", "--num_shards=1", *IN_MEMORY,
         *(queries if protocol == "queries" else [])]
    )  # fmt: skip
    vocab = (out / "vocab" / "category.tsv").read_text().split()
    assert {vocab[0], vocab[2]} == {"x", "y"}
    for split in (F.EVAL, F.TEST):
        (path,) = (out / split).glob("*.tfrecord.gz")
        for raw in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            cats = list(f[F.short_key("category")].int64_list.value)
            assert cats and F.OOV_ID not in cats, (split, cats)


def _users_with_pauses(tmp_path, pause_days: float) -> str:
    """4 users x 3 sessions of 3 events (a minute apart), `pause_days` between sessions."""
    rows = ["user_id,item_id,timestamp"]
    for u in range(4):
        for k in range(3):
            start = 1_000_000 + int(k * pause_days * 86400)
            rows += [f"u{u},i{(u + k + t) % 5},{start + 60 * t}" for t in range(3)]
    path = tmp_path / f"events_{pause_days}.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("pause_days, gap, sessions", [(3, 600, 12), (30, 0, 8)])
def test_auto_session_gap_follows_the_pauses(tmp_path, pause_days, gap, sessions):
    """Sessions 3 days apart keep the gap rule; 30 days apart (2 of every user's 3 sessions
    after a pause beyond the 7-day window: 8 of 12) the history becomes one sequence, cut at
    `max_session_length` 5: [5, 4] per user. The spec tells serving which rule it was."""
    out = tmp_path / f"out_{pause_days}"
    stats = preprocess.run(
        [f"--input={_users_with_pauses(tmp_path, pause_days)}", "--format=csv",
         "--eval_protocol=none", "--min_item_count=1", "--max_session_length=5",
         f"--output_dir={out}", "--num_shards=1", *IN_MEMORY]
    )  # fmt: skip
    share = 0.0 if gap else 8 / 12
    assert stats["session_gap_auto"] == {"long_pause_share": round(share, 4), "session_gap": gap}
    assert stats["sessions"] == sessions
    assert json.loads((out / "stats.json").read_text()) == stats
    assert json.loads((out / "dataset_spec.json").read_text())["session_gap"] == gap
    pinned = preprocess.run(
        [f"--input={_users_with_pauses(tmp_path, pause_days)}", "--format=csv",
         "--eval_protocol=none", "--min_item_count=1", "--max_session_length=5",
         "--session_gap=600", f"--output_dir={tmp_path / 'pinned'}", "--num_shards=1",
         *IN_MEMORY]
    )  # fmt: skip
    assert pinned["sessions"] == 12 and "session_gap_auto" not in pinned
    assert pinned["sessions_after_long_pause"] == (0 if gap else 8)


# a: 4 rows, one an exact duplicate; b: 3, one of an item seen once (r); c: 4 events, over
# --max_user_events=3; d: 6 rows, over --max_user_rows=5. With --min_item_count=2 (i1 4
# times, i2 3, i3 2, r 1; d is gone before the counting): 17 accepted rows = 1 duplicate +
# 6 raw rows of d + 1 rare + 4 events of c + 5 kept (a's 3, b's 2).
ACCOUNTING_ROWS = (
    ["a,i1,100", "a,i1,100", "a,i2,200", "a,i3,300", "b,i1,100", "b,i2,200", "b,r,300"]
    + ["c,i1,100", "c,i2,200", "c,i3,300", "c,i1,400"]
    + [f"d,i2,{t}" for t in range(1, 7)]
)


def _accounting_args(tmp_path, *beam_args) -> list[str]:
    path = tmp_path / "events.csv"
    path.write_text("\n".join(["user_id,item_id,timestamp", *ACCOUNTING_ROWS]) + "\n")
    return [f"--input={path}", "--format=csv", "--eval_protocol=none", "--min_item_count=2",
            "--max_user_events=3", "--max_user_rows=5", "--session_gap=600",
            f"--output_dir={tmp_path / 'out'}", "--num_shards=1", *IN_MEMORY,
            *beam_args]  # fmt: skip


def _accounting_run(tmp_path, *beam_args):
    return preprocess.run(_accounting_args(tmp_path, *beam_args))


def test_every_accepted_event_is_accounted_for(tmp_path):
    stats = _accounting_run(tmp_path)
    assert stats["accepted_rows"] == 17
    assert [stats.get(k, 0) for k in X.ACCOUNTED] == [1, 6, 1, 4, 5]
    assert stats["events"] == 5 and stats["users"] == 2
    assert stats["unaccounted_events"] == 0
    assert X.unaccounted_events({"accepted_rows": 10, "kept_events": 12}) == -2


def _lose_user_b(monkeypatch, runs: int):
    """GroupUsersFn drops user b's element in the first `runs` runs (as a runner would lose
    it after grouping); the pipeline runs in this process (in_memory), so the patch holds."""
    process, calls = R.GroupUsersFn.process, {"a": 0}

    def lossy(self, element):
        if element[0] == "a":
            calls["a"] += 1
        if element[0] != "b" or calls["a"] > runs:
            yield from process(self, element)

    monkeypatch.setattr(R.GroupUsersFn, "process", lossy)
    return calls


def test_events_lost_by_the_runner_are_an_error(tmp_path, monkeypatch):
    """On runner settings the caller chose, a loss fails the run with the number instead of
    leaving an incomplete output behind silently."""
    calls = _lose_user_b(monkeypatch, runs=9)
    with pytest.raises(LostDataError, match="3 of 17 accepted events"):
        _accounting_run(tmp_path, "--direct_num_workers=1")
    assert calls["a"] == 1  # not run again
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["unaccounted_events"] == 3  # b's 3 rows: no step counted them


def test_sdm_picks_directrunner_mode_by_input_size(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    direct = "--runner=DirectRunner"
    assert runner.default_pipeline_args([], 32 << 20) == [
        direct, "--direct_running_mode=multi_processing", "--direct_num_workers=2"]  # fmt: skip
    assert runner.default_pipeline_args([], 321 << 20) == [direct, *runner.IN_MEMORY]
    assert runner.default_pipeline_args(["--direct_num_workers=3"], 321 << 20) == [
        "--direct_num_workers=3", direct, "--direct_running_mode=multi_processing"]  # fmt: skip
    assert runner.default_pipeline_args(["--direct_running_mode=in_memory"]) == [
        "--direct_running_mode=in_memory", direct]  # fmt: skip
    assert runner.default_pipeline_args(["--runner=FlinkRunner"], 1 << 40) == [
        "--runner=FlinkRunner"]  # fmt: skip


def test_a_loss_where_sdm_chose_the_runner_runs_again_in_memory(monkeypatch, capsys):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    calls = []

    def run_once(args):
        calls.append(args)
        if len(calls) == 1:
            raise LostDataError("out is incomplete: 3 of 17 accepted events are missing.")
        return {"events": 17}

    assert runner.run_checked(run_once, [], 1000) == {"events": 17}
    assert "--direct_running_mode=multi_processing" in calls[0]
    assert calls[1] == ["--direct_running_mode=in_memory", "--direct_num_workers=1",
                        "--runner=DirectRunner"]  # fmt: skip
    assert "3 of 17 accepted events are missing. Running again in memory" in capsys.readouterr().err
    for args, size in (([], 321 << 20), (["--direct_num_workers=2"], 0)):  # in memory / pinned
        calls.clear()
        with pytest.raises(LostDataError):
            runner.run_checked(run_once, args, size)
        assert len(calls) == 1


def test_pipelines_run_without_beams_periodic_flush_of_the_runners_streams(monkeypatch):
    """Beam's time-flushed stream drops what the runner writes while it flushes (the loss at
    10^7 events; benchmarks/beam_flush_race.py). run_checked turns the periodic flush off before
    it runs a pipeline: the runner's stream then sends every chunk, in order, once."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.worker import data_plane

    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)  # Beam's own
    chunks = [bytes([i]) * 50_000 for i in range(100)]
    seen = []

    def run_once(args):
        channel = data_plane._GrpcDataChannel(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
        sent = []
        channel._enqueue_to_send = lambda elem: sent.append(elem.data)
        stream = channel.output_stream("bundle_1", "read")
        for c in chunks:
            stream.write(c)
        stream.close()
        seen.append((type(stream).__name__, sent))
        return {}

    runner.run_checked(run_once, [], 0)
    assert seen == [("SizeBasedBufferingClosableOutputStream", [b"".join(chunks), b""])]


def test_input_bytes_sums_the_files_the_patterns_match(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"x" * 10)
    (tmp_path / "b.csv").write_bytes(b"x" * 5)
    (tmp_path / "t.csv").write_bytes(b"x" * 3)
    assert runner.input_bytes([str(tmp_path / "*.csv"), ""]) == 18
    assert runner.input_bytes([str(tmp_path / "[ab].csv"), str(tmp_path / "t.csv")]) == 18


def test_the_launcher_says_a_loss_in_one_line(tmp_path, monkeypatch, capsys):
    from launch import preprocess as launcher

    _lose_user_b(monkeypatch, runs=9)
    argv = ["preprocess", *_accounting_args(tmp_path, "--direct_num_workers=1")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_:
        launcher.entry()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "3 of 17 accepted events" in lines[0] and "Traceback" not in err


def test_count_records_reads_the_length_headers(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "part.tfrecord.gz")
    with tf.io.TFRecordWriter(path, "GZIP") as w:
        for record in (b"a", b"bb" * 1000, b""):
            w.write(record)
    assert X.count_records(str(tmp_path / "*.tfrecord.gz")) == 3
    assert X.count_records(str(tmp_path / "none*.tfrecord.gz")) == 0
    plain = tmp_path / "cut" / "part.tfrecord"
    plain.parent.mkdir()
    with tf.io.TFRecordWriter(str(plain)) as w:
        w.write(b"abc")
    plain.write_bytes(plain.read_bytes()[:-2])  # 8 + 4 + 3 + 4 bytes, the last two cut off
    with pytest.raises(LostDataError, match="ends inside a record"):
        X.count_records(str(plain))


def test_records_lost_after_they_were_counted_are_an_error(tmp_path, monkeypatch):
    """A record the runner drops between making it and writing it: stats.json counts 2 training
    examples (a's session and b's), the files hold 1."""
    process = X.MakeExamplesFn.process

    def lossy(self, element, vocabs, test_day_start):  # Beam reads the side inputs' names
        for out in process(self, element, vocabs, test_day_start):
            if element[0] == "b" and getattr(out, "tag", None) == F.TRAIN:
                continue
            yield out

    monkeypatch.setattr(X.MakeExamplesFn, "process", lossy)
    with pytest.raises(LostDataError, match="train holds 1 records, but 2 examples were made"):
        _accounting_run(tmp_path, "--direct_num_workers=1")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["train_examples"] == 2 and stats["unaccounted_events"] == 0
