"""The benchmark's one-process reference does the pipeline's job: the same records, vocabularies
and counts (so `benchmarks/preprocess_bench.py` races like against like)."""

import json

import pytest

from benchmarks import preprocess_reference as ref
from pipelines import preprocess
from sdm_tf.core import features as F
from tests.conftest import IN_MEMORY


@pytest.mark.parametrize("protocol", ["time", "loo"])
def test_the_reference_writes_the_pipelines_records(synthetic_dir, tmp_path, protocol):
    events = str(synthetic_dir / "events.csv")
    beam_out, ref_out = tmp_path / "beam", tmp_path / "ref"
    beam_stats = preprocess.run(
        ["--input", events, "--output_dir", str(beam_out), f"--eval_protocol={protocol}",
         "--num_shards=2", *IN_MEMORY]
    )  # fmt: skip
    ref_stats = ref.run(events, str(ref_out), protocol=protocol)
    assert ref_stats == beam_stats and beam_stats["train_examples"] > 100
    for kind in F.KINDS:
        records = ref.read_records(str(ref_out), kind)
        assert records == ref.read_records(str(beam_out), kind)
        assert len(records) == beam_stats[f"{kind}_examples"]
    for name in ("vocab/item.tsv", "vocab/leaf_category.tsv", "items.tsv", "dataset_spec.json"):
        assert (ref_out / name).read_text() == (beam_out / name).read_text(), name
    assert json.loads((ref_out / "stats.json").read_text()) == beam_stats


def test_the_reference_refuses_what_it_does_not_do(tmp_path):
    with pytest.raises(ValueError, match="queries"):
        ref.run(str(tmp_path / "x.csv"), str(tmp_path), protocol="queries")
