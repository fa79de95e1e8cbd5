"""The digits experiments in their reduced (CI) mode: they run, write their CSV and PNG
files, and show the qualitative results they are about."""
import csv

import pytest

pytest.importorskip("sklearn")
from normgen.experiments import run  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    return out, run(out_dir=str(out), quick=True, verbose=False)


def _final(rows, **match):
    last = max(r["epoch"] for r in rows)
    hits = [r for r in rows if r["epoch"] == last and all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, match
    return hits[0]


def test_files_written(results):
    out, res = results
    for name, rows in res.items():
        with open(out / f"{name}.csv") as f:
            assert len(list(csv.DictReader(f))) == len(rows) > 0
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_batch_norm_mlp_learns_digits_and_starts_faster(results):
    rows = results[1]["norms"]
    assert _final(rows, norm="batch_norm")["test_accuracy"] >= 0.90
    first = {r["norm"]: r["train_loss"] for r in rows if r["epoch"] == 1}
    assert first["batch_norm"] < 0.8 * first["none"], first


def test_batch_norm_degrades_at_batch_size_two(results):
    rows = results[1]["batch_size"]
    bn2, bn64 = _final(rows, norm="batch_norm", batch_size=2), _final(rows, norm="batch_norm", batch_size=64)
    ln2, gn2 = _final(rows, norm="layer_norm", batch_size=2), _final(rows, norm="group_norm", batch_size=2)
    assert bn2["test_accuracy"] < min(ln2["test_accuracy"], gn2["test_accuracy"]) - 0.03, (bn2, ln2, gn2)
    assert bn2["test_loss"] > 2 * bn64["test_loss"], (bn2, bn64)


def test_running_statistics_beat_tiny_test_batches(results):
    rows = results[1]["inference_stats"]
    running = _final(rows, statistics="running")["test_accuracy"]
    tiny = _final(rows, statistics="batch", test_batch_size=2)["test_accuracy"]
    assert running >= 0.90 and tiny < running - 0.1, (running, tiny)
