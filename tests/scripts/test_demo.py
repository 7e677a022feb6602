"""``anomaly-gym demo``: the three steps run and the story reports its comparison honestly."""

import re

import pytest
from anomaly_gym.scripts import cli

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.slow  # about 90 s: the session's fresh feature cache featurizes the whole built-in suite
def test_demo_trains_adapts_detects_and_compares_with_iforest(tmp_path, capsys):
    assert cli.main(["demo", "--total-steps", "4096", "--run-dir", str(tmp_path), "--device", "cpu"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines at its width
    assert "zero-shot on" in out and "vs IForest" in out
    verdict = re.search(r"the adapted policy (beats|ties|does not beat) IForest: mean test AUROC (\d\.\d+) vs (\d\.\d+)", out)
    assert verdict is not None, out[-2000:]
    few, iforest = float(verdict.group(2)), float(verdict.group(3))
    expected = "beats" if few > iforest else ("ties" if few == iforest else "does not beat")
    assert verdict.group(1) == expected
    scored = list(tmp_path.glob("demo__*/sample.scored.csv"))
    assert len(scored) == 1 and scored[0].read_text().count("\n") > 100
