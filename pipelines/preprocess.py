"""Raw behaviour logs -> sessionized SDM TFRecords (Beam).

    python -m launch.preprocess --input 'logs/*.csv' --output_dir out/ [Beam pipeline options]

Runs on DirectRunner (multi-processing) by default, and unchanged on Flink or Dataflow
(`--runner=FlinkRunner ...`, `--runner=DataflowRunner ...`): every path goes through Beam
filesystems, so `gs://` and `s3://` work wherever the runner has the filesystem installed.

Outputs under --output_dir:
  train/part-*.tfrecord.gz, eval/part-*.tfrecord.gz   Examples in the sdm_tf.core.features layout
  test/part-*.tfrecord.gz                              (with --test_queries) held-out test queries
  train_all/part-*.tfrecord.gz                         (with --test_queries) training examples of
                                                       every event, validation targets included
  vocab/<feature>.tsv, items.tsv                       vocabularies with counts
  dataset_spec.json                                    features present and vocabulary sizes
  stats.json                                           counts (rows, rejects by reason, ...)
  dead_letter/part-*.jsonl                             rejected rows with their reason
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import examples as X
from pipelines import read as R
from pipelines import runner
from pipelines import vocab as V
from sdm_tf.core import features as F
from sdm_tf.core import sessions as S
from sdm_tf.core.errors import InputError
from sdm_tf.core.events import FORMATS, SIDE_FIELDS, InputFormat, parse_columns


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    input: str
    output_dir: str
    fmt: InputFormat = dataclasses.field(default_factory=InputFormat)
    item_table: str = ""
    item_key: str = "item_id"
    item_columns: dict = dataclasses.field(default_factory=dict)  # side field -> column
    user_table: str = ""
    user_key: str = "user_id"
    profile_columns: tuple[str, ...] = ()  # empty: every other column
    session: S.SessionConfig = dataclasses.field(default_factory=S.SessionConfig)
    min_item_count: int = 5
    max_user_events: int = 1000
    max_user_rows: int = 100_000
    eval_protocol: str = "time"
    queries: str = ""
    truth: str = ""
    test_queries: str = ""
    test_truth: str = ""
    chunk_bytes: int = 8 << 20
    num_shards: int = 4


def _read_truth(line: str):
    row = json.loads(line)
    return str(row["user_id"]), [str(i) for i in row["items"]]


def written_kinds(cfg: PreprocessConfig) -> tuple[str, ...]:
    return (*F.KINDS, F.TEST, F.TRAIN_ALL) if cfg.test_queries else F.KINDS


def build(p: beam.Pipeline, cfg: PreprocessConfig) -> None:
    """Adds the whole preprocessing graph to `p`."""
    dead, stats = [], []

    read = p | "ReadEvents" >> R.ReadEvents(cfg.input, cfg.fmt, cfg.chunk_bytes)
    dead.append(read[R.DEAD])
    stats.append(read[R.STATS])
    grouped = read["events"] | "GroupByUser" >> R.GroupByUser(max_rows=cfg.max_user_rows)
    stats.append(grouped[R.STATS])
    users = grouped["users"]

    item_sides = None
    if cfg.item_table:
        columns = cfg.item_columns or {
            f: f for f in SIDE_FIELDS if f in R.read_csv_header(cfg.item_table)
        }
        items = p | "ReadItemTable" >> R.ReadTable(cfg.item_table, cfg.item_key, columns, "item")
        dead.append(items[R.DEAD])
        stats.append(items[R.STATS])
        item_sides = beam.pvalue.AsDict(items["rows"])
        users = users | "JoinItemTable" >> beam.Map(R.apply_item_table, item_sides)

    filtered = users | "Filter" >> V.FilterEvents(cfg.min_item_count, cfg.max_user_events)
    stats.append(filtered[R.STATS])
    users = filtered["users"]

    profiles = None
    if cfg.user_table:
        header = R.read_csv_header(cfg.user_table)
        cols = cfg.profile_columns or tuple(c for c in header if c != cfg.user_key)
        profile = p | "ReadUserTable" >> R.ReadTable(
            cfg.user_table, cfg.user_key, {c: c for c in cols}, "user"
        )
        dead.append(profile[R.DEAD])
        stats.append(profile[R.STATS])
        profiles = profile["rows"]

    # The time protocol holds out the last day: frequencies are counted before it.
    test_day = users | "TestDayStart" >> X.TestDayStart() if cfg.eval_protocol == "time" else None
    vocabs = users | "Vocabularies" >> V.BuildVocabularies(profiles, before=test_day)

    groups = {"events": users}
    if profiles is not None:
        groups["profile"] = profiles

    def read_queries(queries: str, truth: str, name: str, prefix: str):
        """(user, fed events) and (user, truth items) of one query set. The fed events take the
        item table's side values exactly as training events do: without them a query would feed
        OOV categories and brands to the model."""
        q = p | f"Read{name}" >> R.ReadEvents(queries, cfg.fmt, cfg.chunk_bytes, rows_prefix=prefix)
        dead.append(q[R.DEAD])
        stats.append(q[R.STATS])
        grouped = q["events"] | f"Group{name}" >> R.GroupByUser(prefix=prefix)
        stats.append(grouped[R.STATS])
        fed = grouped["users"]
        if item_sides is not None:
            fed = fed | f"JoinItemTable{name}" >> beam.Map(R.apply_item_table, item_sides)
        gold = (
            p
            | f"Read{name}Truth" >> beam.io.ReadFromText(truth)
            | f"Parse{name}Truth" >> beam.Map(_read_truth)
        )
        return fed, gold

    if cfg.eval_protocol == "queries":
        groups["fed"], groups["truth"] = read_queries(cfg.queries, cfg.truth, "Queries", "query_")
    if cfg.test_queries:  # held-out test queries beside a validation split
        groups["test_fed"], groups["test_truth"] = read_queries(
            cfg.test_queries, cfg.test_truth, "TestQueries", "test_query_"
        )
    joined = groups | "JoinPerUser" >> beam.CoGroupByKey()
    examples = joined | "MakeExamples" >> X.MakeExamples(
        cfg.session, cfg.eval_protocol, vocabs, test_day=test_day
    )
    stats.append(examples[R.STATS])
    stats.append(vocabs | "ItemCount" >> beam.Map(lambda v: {"items": len(v["features"][F.ITEM])}))

    out = cfg.output_dir
    for kind in written_kinds(cfg):
        _ = examples[kind] | f"Write{kind.title()}" >> beam.io.WriteToTFRecord(
            FileSystems.join(out, kind, "part"),
            file_name_suffix=".tfrecord.gz",
            num_shards=cfg.num_shards,
            compression_type=CompressionTypes.GZIP,
        )
    _ = vocabs | "WriteVocabularies" >> beam.Map(V.write_vocabularies, out, cfg.session)
    _ = (
        dead
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters"
        >> beam.io.WriteToText(
            FileSystems.join(out, "dead_letter", "part"), file_name_suffix=".jsonl", num_shards=1
        )
    )
    _ = (
        stats
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(V.CounterCombineFn())
        | "FinalStats" >> beam.Map(X.finalize_stats)
        | "WriteStats"
        >> beam.Map(
            lambda s: V.write_text(
                FileSystems.join(out, "stats.json"), json.dumps(s, indent=1, sort_keys=True)
            )
        )
    )


def session_gap_text(stats: dict) -> str:
    """The session rule the data was built with, in words."""
    auto = stats.get("session_gap_auto")
    if not auto:
        return "as given"
    gap = f"{auto['session_gap']} s" if auto["session_gap"] else "none (one sequence per user)"
    share = auto["long_pause_share"]
    return f"{gap}: auto, {share:.1%} of sessions after a pause beyond the long-term window"


def table1(stats: dict, name: str = "dataset") -> str:
    """A summary in the shape of the paper's Table 1."""
    rows = [
        ("Dataset", name),
        ("# users", f"{stats['users']:,}"),
        ("# items", f"{stats['items']:,}"),
        ("# events", f"{stats['events']:,}"),
        ("# sessions", f"{stats['sessions']:,}"),
        ("session gap", session_gap_text(stats)),
        ("avg. session length", f"{stats['avg_session_length']:.2f}"),
        ("# train examples", f"{stats['train_examples']:,}"),
        ("# eval examples", f"{stats['eval_examples']:,}"),
        ("rows in / rejected", f"{stats['input_rows']:,} / {stats['rejected_rows']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--input", required=True, help="event log file pattern (local, gs://, s3://, ...)")
    a("--output_dir", required=True)
    a("--format", choices=FORMATS, default="taobao")
    a("--columns", default="", help="field=column mapping, e.g. user=user_id,item=item_id,...")
    a("--delimiter", default=",")
    a("--no_header", action="store_true", help="CSV files have no header row")
    a("--timestamp_unit", choices=["s", "ms"], default="s")
    a("--min_timestamp", type=int, default=0)
    a("--max_timestamp", type=int, default=4102444800)
    a("--item_table", default="", help="CSV with a header: item id and side columns")
    a("--item_key", default="item_id")
    a("--item_columns", default="", help="side field=column mapping for the item table")
    a("--user_table", default="", help="CSV with a header: user id and profile columns")
    a("--user_key", default="user_id")
    a("--profile_columns", default="", help="comma list; default: every other column")
    a(
        "--session_gap",
        default="auto",
        help="seconds; 0: no gap rule (one sequence per user); auto: 600 unless many sessions "
        "follow a pause longer than the long-term window (sdm_tf.core.sessions.NO_GAP_SHARE)",
    )
    a("--max_session_length", type=int, default=50)
    a("--long_term_days", type=float, default=7.0)
    a("--long_term_size", type=int, default=20)
    a("--next_n", type=int, default=5)
    a(
        "--prior_size",
        type=int,
        default=1000,
        help="distinct earlier items per training record, for the softmax mask (0: none)",
    )
    a("--min_item_count", type=int, default=5)
    a("--max_user_events", type=int, default=1000)
    a(
        "--max_user_rows",
        type=int,
        default=100_000,
        help="users with more input rows are dropped while grouping, before their events are "
        "held in memory (a bound on memory; --max_user_events is the paper's rule; 0: off)",
    )
    a("--eval_protocol", choices=X.PROTOCOLS, default="time")
    a("--queries", default="", help="(queries protocol) events to feed per test user")
    a("--truth", default="", help="(queries protocol) JSONL of {user_id, items}")
    a("--test_queries", default="", help="events to feed per held-out test user (-> test/)")
    a("--test_truth", default="", help="JSONL of {user_id, items} for --test_queries")
    a("--chunk_bytes", type=int, default=8 << 20)
    a("--num_shards", type=int, default=4)
    return p


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    fmt = InputFormat(
        kind=args.format,
        columns=parse_columns(args.columns),
        delimiter=args.delimiter,
        has_header=not args.no_header,
        timestamp_unit=args.timestamp_unit,
        min_timestamp=args.min_timestamp,
        max_timestamp=args.max_timestamp,
    )
    if args.eval_protocol == "queries" and not (args.queries and args.truth):
        raise SystemExit("--eval_protocol=queries needs --queries and --truth")
    if bool(args.test_queries) != bool(args.test_truth):
        raise SystemExit("--test_queries and --test_truth go together")
    if args.session_gap != "auto" and not str(args.session_gap).isdigit():
        raise SystemExit(f"--session_gap: seconds, 0 or auto; got {args.session_gap!r}")
    gap = S.DEFAULT_SESSION_GAP if args.session_gap == "auto" else int(args.session_gap)
    return PreprocessConfig(
        input=args.input,
        output_dir=args.output_dir,
        fmt=fmt,
        item_table=args.item_table,
        item_key=args.item_key,
        item_columns={k: str(v) for k, v in parse_columns(args.item_columns).items()},
        user_table=args.user_table,
        user_key=args.user_key,
        profile_columns=tuple(c for c in args.profile_columns.split(",") if c),
        session=S.SessionConfig(
            session_gap=gap,
            max_session_length=args.max_session_length,
            long_term_days=args.long_term_days,
            long_term_size=args.long_term_size,
            next_n=args.next_n,
            prior_size=args.prior_size,
        ),
        min_item_count=args.min_item_count,
        max_user_events=args.max_user_events,
        max_user_rows=args.max_user_rows,
        eval_protocol=args.eval_protocol,
        queries=args.queries,
        truth=args.truth,
        test_queries=args.test_queries,
        test_truth=args.test_truth,
        chunk_bytes=args.chunk_bytes,
        num_shards=args.num_shards,
    )


def check_inputs(cfg: PreprocessConfig) -> None:
    """Every named file exists and a CSV header has the mapped columns, before Beam starts:
    `InputError` with the flag and what was expected, not a failure inside a worker."""
    named = {
        "input": cfg.input,
        "item_table": cfg.item_table,
        "user_table": cfg.user_table,
        "queries": cfg.queries,
        "truth": cfg.truth,
        "test_queries": cfg.test_queries,
        "test_truth": cfg.test_truth,
    }
    for flag, pattern in named.items():
        if pattern and not FileSystems.match([pattern])[0].metadata_list:
            raise InputError(f"--{flag} {pattern}: no such file")
    if cfg.fmt.kind == "csv" and cfg.fmt.has_header:
        for flag in ("input", "queries", "test_queries"):
            if not named[flag]:
                continue
            header = R.read_csv_header(named[flag], cfg.fmt.delimiter)
            for field in ("user", "item", "timestamp"):
                column = cfg.fmt.columns.get(field)
                if isinstance(column, str) and column not in header:
                    raise InputError(
                        f"--{flag} {named[flag]}: no column {column!r} for the {field} "
                        f"(the header has {header}); map it with --columns {field}=NAME"
                    )
    for flag, pattern, key in (
        ("item_table", cfg.item_table, cfg.item_key),
        ("user_table", cfg.user_table, cfg.user_key),
    ):
        if pattern and key not in R.read_csv_header(pattern):
            raise InputError(f"--{flag} {pattern}: no {key!r} column in its header")


def run_with_auto_gap(
    run_once: Callable[[S.SessionConfig], dict], session: S.SessionConfig, output_dir: str
) -> dict:
    """`run_once(session)` (a run of the whole job, returning stats.json's content), and again
    without the gap rule where `S.auto_session_gap` says so; stats.json records the decision as
    `session_gap_auto`."""
    stats = run_once(session)
    gap = S.auto_session_gap(stats)
    auto = {"long_pause_share": round(S.long_pause_share(stats), 4), "session_gap": gap}
    if gap != session.session_gap:
        # Every output has a fixed name (shards included): this run overwrites the first.
        stats = run_once(dataclasses.replace(session, session_gap=gap))
    stats["session_gap_auto"] = auto
    V.write_text(
        FileSystems.join(output_dir, "stats.json"), json.dumps(stats, indent=1, sort_keys=True)
    )
    return stats


def _run_pipeline(cfg: PreprocessConfig, pipeline_args: list[str]) -> dict:
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
        build(p, cfg)
    with FileSystems.open(FileSystems.join(cfg.output_dir, "stats.json")) as f:
        stats = json.loads(f.read())
    X.check_accounting(stats, cfg.output_dir)
    X.check_written(stats, cfg.output_dir, written_kinds(cfg))
    return stats


def run(argv: Sequence[str] | None = None) -> dict:
    """Runs the pipeline and returns stats.json's content."""
    args, beam_args = make_parser().parse_known_args(argv)
    cfg = config_from_args(args)
    check_inputs(cfg)
    size = runner.input_bytes([cfg.input, cfg.item_table, cfg.user_table])
    if args.session_gap == "auto":
        stats = run_with_auto_gap(
            lambda session: runner.run_checked(
                lambda a: _run_pipeline(dataclasses.replace(cfg, session=session), a),
                beam_args,
                size,
            ),
            cfg.session,
            cfg.output_dir,
        )
    else:
        stats = runner.run_checked(lambda a: _run_pipeline(cfg, a), beam_args, size)
    print(table1(stats, os.path.basename(cfg.input.rstrip("/")) or cfg.input))
    return stats
