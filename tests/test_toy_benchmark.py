"""The toy benchmark's runner: an interrupted table is finished with --reuse, without training its runs again."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def benchmark(*args: str) -> None:
    """The runner as a user calls it (its runs are spawned processes)."""
    subprocess.run([sys.executable, str(REPO / "experiments" / "toy_mode_collapse" / "run.py"), *args], check=True,
                   capture_output=True)


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_reuse_scores_the_completed_runs_of_the_same_config_and_refuses_others(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    args = ["--variants", "gan", "--data", "ring", "--seeds", "1", "--jobs", "1", "--work-dir", str(work),
            "--set", "trainer.max_steps=20"]
    benchmark(*args, "--out", str(out / "first"))
    log = work / "gan_ring_s0" / "train.log"
    trained_at = log.stat().st_mtime_ns

    benchmark(*args, "--out", str(out / "again"), "--reuse")
    assert log.stat().st_mtime_ns == trained_at  # scored, not trained again
    first, again = rows(out / "first" / "runs.csv"), rows(out / "again" / "runs.csv")
    assert [{k: r[k] for k in ("modes", "high_quality", "reverse_kl", "updates")} for r in again] == \
           [{k: r[k] for k in ("modes", "high_quality", "reverse_kl", "updates")} for r in first]

    # another config (a longer run) is neither taken for the finished run nor trained over it; without --reuse, the
    # finished run is not trained over either, and the refusal says how to score it
    for steps, reuse, says in (("30", ["--reuse"], "one of another config"), ("20", [], "--reuse scores it")):
        with pytest.raises(subprocess.CalledProcessError) as refused:
            benchmark(*args[:-1], f"trainer.max_steps={steps}", "--out", str(out / "refused"), *reuse)
        assert says in refused.value.stderr.decode()
        assert log.stat().st_mtime_ns == trained_at and not (out / "refused" / "runs.csv").exists()
