"""Raw events: the canonical record, input formats, and row validation.

A row becomes an `Event` or a rejection reason; nothing here raises on bad input. The readers in
the readers of `pipelines` turn every rejection into a dead-letter record and a counter.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping
from typing import NamedTuple

# Item-side columns an event (or the item table) may carry, in sdm_tf.core.features order.
SIDE_FIELDS: tuple[str, ...] = ("leaf_category", "category", "brand", "shop")
EVENT_FIELDS: tuple[str, ...] = (
    "user",
    "item",
    "timestamp",
    "session_id",
    "behavior",
    *SIDE_FIELDS,
)

# Rejection reasons (dead-letter `reason` and stats keys).
BAD_UTF8 = "bad_utf8"
EMPTY_ROW = "empty_row"
WRONG_COLUMN_COUNT = "wrong_column_count"
BAD_JSON = "bad_json"
MISSING_COLUMN = "missing_column"
EMPTY_ID = "empty_id"
NON_NUMERIC_TIMESTAMP = "non_numeric_timestamp"
ABSURD_TIMESTAMP = "absurd_timestamp"
REASONS = (
    BAD_UTF8,
    EMPTY_ROW,
    WRONG_COLUMN_COUNT,
    BAD_JSON,
    MISSING_COLUMN,
    EMPTY_ID,
    NON_NUMERIC_TIMESTAMP,
    ABSURD_TIMESTAMP,
)


class Event(NamedTuple):
    """One behaviour event.

    `sides` holds SIDE_FIELDS values ("" where absent). `order` = (source, offset) breaks ties
    between equal timestamps in file order, which survives any parallel read.
    """

    user: str
    item: str
    timestamp: int
    session_id: str
    behavior: str
    sides: tuple[str, ...]
    order: tuple[str, int]

    def key(self) -> tuple:
        """Identity for exact-duplicate removal (everything but the position in the file)."""
        return (self.item, self.timestamp, self.session_id, self.behavior, self.sides)


TAOBAO_COLUMNS = {"user": 0, "item": 1, "leaf_category": 2, "behavior": 3, "timestamp": 4}
# Columns of ../shared/bench/prepare.py files (and of generic logs by default).
DEFAULT_CSV_COLUMNS = {
    "user": "user_id",
    "item": "item_id",
    "timestamp": "timestamp",
    "session_id": "session_id",
    "behavior": "behavior",
    "category": "category",
    "leaf_category": "leaf_category",
    "brand": "brand",
    "shop": "shop",
}
FORMATS = ("taobao", "csv", "jsonl", "parquet")


@dataclasses.dataclass(frozen=True)
class InputFormat:
    """How to read one event log.

    Attributes:
      kind: "taobao" (UserBehavior.csv: user,item,category,behavior,ts, no header), "csv",
        "jsonl" or "parquet".
      columns: canonical field -> source column: a name, or a 0-based index for header-less CSV.
        Fields other than user, item and timestamp are optional; a named column missing from a
        file's header is treated as absent.
      delimiter: CSV delimiter.
      has_header: whether CSV files start with a header row.
      timestamp_unit: "s" or "ms".
      min_timestamp, max_timestamp: seconds; a timestamp outside [min, max) is absurd.
    """

    kind: str = "taobao"
    columns: Mapping[str, str | int] = dataclasses.field(default_factory=dict)
    delimiter: str = ","
    has_header: bool = False
    timestamp_unit: str = "s"
    min_timestamp: int = 0
    max_timestamp: int = 4102444800  # 2100-01-01

    def __post_init__(self):
        if self.kind not in FORMATS:
            raise ValueError(f"unknown input format {self.kind!r}; known: {FORMATS}")
        if self.timestamp_unit not in ("s", "ms"):
            raise ValueError("timestamp_unit must be 's' or 'ms'")
        columns = dict(self.columns)
        if not columns:
            columns = dict(TAOBAO_COLUMNS if self.kind == "taobao" else DEFAULT_CSV_COLUMNS)
        unknown = set(columns) - set(EVENT_FIELDS)
        if unknown:
            raise ValueError(f"unknown event fields {sorted(unknown)}; known: {EVENT_FIELDS}")
        for required in ("user", "item", "timestamp"):
            if required not in columns:
                raise ValueError(f"the column mapping needs {required!r}")
        if self.kind == "taobao":
            object.__setattr__(self, "has_header", False)
        if self.kind == "csv" and not self.has_header:
            if not all(isinstance(v, int) for v in columns.values()):
                raise ValueError("a header-less CSV needs column indices, e.g. user=0")
        object.__setattr__(self, "columns", columns)

    @property
    def line_based(self) -> bool:
        return self.kind != "parquet"


def parse_columns(spec: str) -> dict[str, str | int]:
    """'user=user_id,item=2' -> {'user': 'user_id', 'item': 2}."""
    out: dict[str, str | int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"column mapping entries look like field=column, got {part!r}")
        field, column = (s.strip() for s in part.split("=", 1))
        out[field] = int(column) if column.isdigit() else column
    return out


class RowParser:
    """Validates and converts raw rows of one format into Events.

    `header` is the file's header row (CSV with header); it resolves named columns to indices.
    """

    def __init__(self, fmt: InputFormat, header: list[str] | None = None):
        self.fmt = fmt
        self.header = header
        self._index: dict[str, int | str] = {}
        for field, col in fmt.columns.items():
            if fmt.kind in ("taobao", "csv"):
                if isinstance(col, int):
                    self._index[field] = col
                elif header is not None and col in header:
                    self._index[field] = header.index(col)
                elif field in ("user", "item", "timestamp"):
                    raise ValueError(f"column {col!r} for {field!r} is not in the header {header}")
            else:
                self._index[field] = col
        self._ncols = len(header) if header is not None else None
        if fmt.kind == "taobao":
            self._ncols = len(TAOBAO_COLUMNS)
        elif fmt.kind == "csv" and header is None:
            self._ncols = None  # header-less CSV: any row wide enough is fine
        self._scale = 1000 if fmt.timestamp_unit == "ms" else 1
        # Line formats: the narrowest row that holds every mapped column (checked per row).
        self._width = 1 + max(self._index.values()) if fmt.kind in ("taobao", "csv") else 0

    def parse_line(self, raw: bytes, order: tuple[str, int]) -> Event | str:
        """Returns an Event, or the rejection reason."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BAD_UTF8
        if not line.strip():
            return EMPTY_ROW
        if self.fmt.kind == "jsonl":
            try:
                obj = json.loads(line)
            except ValueError:
                return BAD_JSON
            if not isinstance(obj, dict):
                return BAD_JSON
            return self.parse_mapping(obj, order)
        row = next(csv.reader([line], delimiter=self.fmt.delimiter))
        if self._ncols is not None and len(row) != self._ncols:
            return WRONG_COLUMN_COUNT
        if len(row) < self._width:
            return WRONG_COLUMN_COUNT
        return self._make({f: row[i] for f, i in self._index.items()}, order)  # type: ignore

    def parse_mapping(self, obj: Mapping, order: tuple[str, int]) -> Event | str:
        values = {}
        for field, col in self._index.items():
            if col not in obj:
                if field in ("user", "item", "timestamp"):
                    return MISSING_COLUMN
                continue
            v = obj[col]
            values[field] = "" if v is None else str(v)
        return self._make(values, order)

    def _make(self, v: Mapping[str, str], order: tuple[str, int]) -> Event | str:
        user = v["user"].strip()
        item = v["item"].strip()
        if not user or not item:
            return EMPTY_ID
        raw_ts = v["timestamp"].strip()
        try:
            ts_f = float(raw_ts)
        except ValueError:
            return NON_NUMERIC_TIMESTAMP
        if not math.isfinite(ts_f):
            return NON_NUMERIC_TIMESTAMP
        ts = int(ts_f // self._scale)
        if not self.fmt.min_timestamp <= ts < self.fmt.max_timestamp:
            return ABSURD_TIMESTAMP
        sides = tuple(v.get(f, "").strip() for f in SIDE_FIELDS)
        return Event(
            user,
            item,
            ts,
            v.get("session_id", "").strip(),
            v.get("behavior", "").strip(),
            sides,
            order,
        )


def split_header(raw: bytes, delimiter: str) -> list[str]:
    line = raw.decode("utf-8-sig").rstrip("\r\n")
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
