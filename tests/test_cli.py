"""The clip-invariance command line."""

import subprocess
import sys

import pytest

from clip_invariance.cli import main, run_demo


def test_demo_rows_show_the_invariant_gain():
    rows = run_demo(n_samples=1200, normalize=False, random_state=0)
    assert [r["env"] for r in rows] == [0, 1, 2, 3]
    shifted = rows[-1]
    assert shifted["shifted"] and not any(r["shifted"] for r in rows[:-1])
    # Out of distribution the invariant subspace beats raw CLIP, zero-shot and probe.
    assert shifted["ZS ICM"] > shifted["zero-shot"] + 0.3
    assert shifted["probe ICM"] > shifted["probe"] + 0.15
    assert shifted["probe ICM"] > shifted["oracle"] - 0.05
    assert shifted["max angle"] < 15


def test_demo_prints_a_table(capsys):
    assert main(["demo", "--n-samples", "800", "--normalize", "yes"]) == 0
    out = capsys.readouterr().out
    assert "embeddings: L2-normalised" in out and "embeddings: raw" not in out
    assert "ZS ICM" in out and "probe ICM" in out and "oracle" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("3 ")]) == 1


def test_console_script_usage_error():
    out = subprocess.run(
        [sys.executable, "-m", "clip_invariance.cli", "nonsense"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_demo_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["demo", "--normalize", "maybe"])


def test_evaluate_on_pacs_mini(tiny_model, pacs_mini, capsys):
    """End to end on real images with a tiny random-weight model (accuracy is meaningless)."""
    assert main([
        "evaluate", str(pacs_mini), "--model-name", tiny_model, "--pretrained", "none",
        "--device", "cpu", "--n-components", "8", "--batch-size", "64",
    ]) == 0
    out = capsys.readouterr().out
    for domain in ("art_painting", "cartoon", "photo", "sketch", "average"):
        assert domain in out
    header = next(line for line in out.splitlines() if line.split()[:1] == ["domain"])
    assert header.split() == ["domain", "zero-shot", "ZS", "ICM", "probe", "probe", "ICM"]


def test_evaluate_missing_folder(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="missing"):
        main(["evaluate", str(tmp_path / "missing"), "--pretrained", "none"])
