"""benchmarks/movielens_100k.py: GroupLens' 100K archive as prepare.py's MovieLens CSV."""

import csv
import json

import pytest

from benchmarks import movielens_100k
from tests.conftest import prepare_split

GENRES = "unknown|0\nAction|1\nComedy|2\n\n"
# Item 3's title is Latin-1 (é) and has no genre flag set.
ITEMS = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://y|0|1|1\n"
    "3|Café, Le (1996)|01-Jan-1996||http://z|0|0|0\n"
)
# User 7 rates 1, 2, 3 in that order; user 8 rates 2 then 1 (equal timestamps keep file order).
DATA = "7\t1\t5\t100\n8\t2\t3\t50\n7\t2\t4\t200\n8\t1\t1\t50\n7\t3\t2\t300\n"


def write_archive(path, items=ITEMS, data=DATA):
    path.mkdir()
    (path / "u.genre").write_bytes(GENRES.encode("latin-1"))
    (path / "u.item").write_bytes(items.encode("latin-1"))
    (path / "u.data").write_text(data)
    return path


def test_writes_movielens_small_layout(tmp_path):
    src = write_archive(tmp_path / "ml-100k")
    assert movielens_100k.convert(str(src), str(tmp_path / "out")) == {"ratings": 5, "movies": 3}
    with open(tmp_path / "out" / "movies.csv", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [
            ["movieId", "title", "genres"],
            ["1", "Toy Story (1995)", "Comedy"],
            ["2", "GoldenEye (1995)", "Action|Comedy"],
            ["3", "Café, Le (1996)", "(no genres listed)"],
        ]
    lines = (tmp_path / "out" / "ratings.csv").read_text().splitlines()
    assert lines[:3] == ["userId,movieId,rating,timestamp", "7,1,5,100", "8,2,3,50"]
    assert len(lines) == 6


def test_prepare_reads_it(tmp_path):
    src = write_archive(tmp_path / "ml-100k")
    movielens_100k.convert(str(src), str(tmp_path / "csv"))
    out = tmp_path / "split"
    prepare_split(
        out, "movielens", tmp_path / "csv" / "ratings.csv", "--items",
        str(tmp_path / "csv" / "movies.csv"), "--min-item-count", "1",
    )  # fmt: skip
    info = json.loads((out / "split.json").read_text())
    assert (info["raw_events"], info["users"], info["items"]) == (5, 2, 3)
    # Only user 7 has three events: its last (item 3) is the truth.
    truth = [json.loads(x) for x in (out / "test_truth.jsonl").read_text().splitlines()]
    assert truth == [{"user_id": "7", "items": ["3"]}]
    with open(out / "items.csv") as f:
        categories = {r["item_id"]: r["category"] for r in csv.DictReader(f)}
    # prepare.py takes the first genre as the category.
    assert categories == {"1": "Comedy", "2": "Action", "3": "(no genres listed)"}


@pytest.mark.parametrize(
    "items, data, error",
    [
        (ITEMS, "7\t1\t5\n", "u.data line 1: expected 4 integers"),
        (ITEMS, "7\t1\tfive\t100\n", "u.data line 1"),
        ("1|A (1995)|x||u|0|1\n", DATA, "u.item line 1: 2 genre flags, u.genre has 3"),
    ],
)
def test_refuses_malformed_lines(tmp_path, items, data, error):
    src = write_archive(tmp_path / "ml-100k", items=items, data=data)
    with pytest.raises(ValueError, match=error):
        movielens_100k.convert(str(src), str(tmp_path / "out"))
