"""GroupLens' MovieLens-100K archive (`ml-100k/`) as the CSV files prepare.py's movielens reads.

MovieLens-100K ships its ratings as `u.data` (user, item, rating, timestamp; tab-separated, no
header) and its movies as `u.item` (Latin-1, `|`-separated: id, title, dates, URL, then 19 genre
flags named by `u.genre`). prepare.py's `--format movielens` reads MovieLens-small's layout:
`ratings.csv` (userId,movieId,rating,timestamp) and `movies.csv` (movieId,title,genres, the
genres `|`-joined, the first of them taken as the category). This writes that layout:

    python benchmarks/movielens_100k.py ml-100k OUT
    python ../shared/bench/prepare.py --format movielens --input OUT/ratings.csv \
        --items OUT/movies.csv --out SPLIT
"""

from __future__ import annotations

import argparse
import csv
import os

NO_GENRE = "(no genres listed)"  # MovieLens-small's spelling


def genre_names(lines: list[str]) -> list[str]:
    """`u.genre` ("name|index" lines) -> names in index order."""
    pairs = [line.strip().rsplit("|", 1) for line in lines if line.strip()]
    names = dict((int(i), name) for name, i in pairs)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"u.genre: indices {sorted(names)} are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def rating_rows(lines: list[str]) -> list[list[str]]:
    """`u.data` lines -> [user, item, rating, timestamp] rows."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"u.data line {n}: expected 4 integers, got {line.strip()!r}")
        rows.append(parts)
    return rows


def movie_rows(lines: list[str], genres: list[str]) -> list[list[str]]:
    """`u.item` lines -> [id, title, genres] rows."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("|")
        flags = parts[5:]
        if len(flags) != len(genres):
            raise ValueError(
                f"u.item line {n}: {len(flags)} genre flags, u.genre has {len(genres)}"
            )
        names = [g for g, flag in zip(genres, flags, strict=True) if flag == "1"]
        rows.append([parts[0], parts[1], "|".join(names) or NO_GENRE])
    return rows


def convert(src: str, out: str) -> dict[str, int]:
    """Writes OUT/ratings.csv and OUT/movies.csv; returns their row counts."""

    def read(name: str, encoding: str) -> list[str]:
        with open(os.path.join(src, name), encoding=encoding) as f:
            return f.read().splitlines()

    genres = genre_names(read("u.genre", "latin-1"))
    ratings = rating_rows(read("u.data", "ascii"))
    movies = movie_rows(read("u.item", "latin-1"), genres)
    os.makedirs(out, exist_ok=True)
    for name, header, rows in (
        ("ratings.csv", ["userId", "movieId", "rating", "timestamp"], ratings),
        ("movies.csv", ["movieId", "title", "genres"], movies),
    ):
        with open(os.path.join(out, name), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return {"ratings": len(ratings), "movies": len(movies)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="the unpacked ml-100k directory (u.data, u.item, u.genre)")
    p.add_argument("out")
    counts = convert(**vars(p.parse_args(argv)))
    print(counts)


if __name__ == "__main__":
    main()
