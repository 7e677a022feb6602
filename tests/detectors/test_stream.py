"""StreamDetector: flags that keep their rate, refits in the background, River/PySAD interface."""

import math
import random

import numpy as np
import pytest
from anomaly_gym.agents import PolicyBundle, load_default_bundle, make_agent
from anomaly_gym.detectors.stream import ConformalReference, StreamDetector, split_window
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.envs.features import Featurizer
from anomaly_gym.envs.series import read_series_csv

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")

C = 0.05
BLOCK = 1000


@pytest.fixture(scope="module")
def default_bundle():
    try:
        return load_default_bundle(device="cpu")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tiny_bundle():
    config = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=300, seed=0)], featurizer=config)
    return PolicyBundle(make_agent("ppo", env, net_arch=[8], device="cpu", n_steps=64, batch_size=64).learn(256), config)


def _block_rates(bundle, X: np.ndarray, **kw) -> np.ndarray:
    """Flagged share of each full block of BLOCK scored rows (defaults: warmup 256, window 2048, refit every 1024)."""
    with StreamDetector(bundle, contamination=C, background=False, **kw) as det:
        flags = np.array([f for f in (det.process_one(x)[1] for x in X) if f is not None])
    assert len(flags) == len(X) - det.warmup
    return flags[: len(flags) // BLOCK * BLOCK].reshape(-1, BLOCK).mean(axis=1)


def _within(rates: np.ndarray) -> bool:
    return bool(np.all(np.abs(rates - C) <= 0.4 * C + 1e-12))


@pytest.mark.parametrize("n_columns, seed", [(1, 0), (10, 0), pytest.param(1, 1, marks=pytest.mark.slow), pytest.param(10, 1, marks=pytest.mark.slow)])
def test_flags_keep_their_rate_on_a_gaussian_stream_from_the_first_scored_row(default_bundle, n_columns, seed):
    # Each row is flagged with probability C independently, so a block's share is a
    # binomial(1000, C) share: outside C +- 40% about once in 250 blocks, whatever the fit.
    X = np.random.default_rng(seed).normal(size=(256 + 3 * BLOCK, n_columns))
    rates = _block_rates(default_bundle, X)
    assert len(rates) == 3 and _within(rates), rates


@pytest.mark.parametrize(
    "name",
    [
        "art_flatline",
        "art_daily_perfect_square_wave",
        "art_noisy",
        pytest.param("art_daily_no_noise", marks=pytest.mark.slow),
        pytest.param("art_daily_small_noise", marks=pytest.mark.slow),
    ],
)
def test_flags_keep_their_rate_on_nab_streams_without_anomalies(default_bundle, nab_dir, name):
    path = nab_dir / "artificialNoAnomaly" / f"{name}.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    # a flat line and a square wave: their scores tie, and ties are broken at random
    values = read_series_csv(path, path.name).values.reshape(-1, 1)
    rates = _block_rates(default_bundle, values)
    assert len(rates) >= 3 and _within(rates), rates


def test_conformal_p_values_are_uniform_with_ties_and_independent_of_the_reference():
    rng, draws = np.random.default_rng(0), random.Random(0)
    for values in (rng.normal(size=3000), rng.integers(0, 3, size=3000).astype(float), np.full(3000, 7.0)):
        ref = ConformalReference(values[:100], cap=10_000)
        ps = []
        for s in values[100:]:
            ps.append(ref.p_value(float(s), draws.random()))
            ref.add(float(s))
        ps = np.array(ps)
        assert abs(np.mean(ps <= C) - C) < 0.015, np.mean(ps <= C)
        assert abs(np.mean(ps <= 0.5) - 0.5) < 0.04
    ref = ConformalReference([1.0, 2.0, 3.0], cap=3)
    assert ref.p_value(10.0, 0.0) == 0.0 and ref.p_value(-1.0, 0.999) == pytest.approx(0.99975)
    ref.add(5.0)  # the oldest (1.0) leaves
    assert len(ref) == 3 and ref.p_value(1.5, 0.5) == pytest.approx((3 + 0.5) / 4)


def test_split_window_holds_out_every_fourth_row_and_keeps_ten_to_fit():
    fit, hold = split_window(40)
    np.testing.assert_array_equal(hold, np.arange(3, 40, 4))
    assert len(fit) == 30 and not set(fit) & set(hold)
    fit, hold = split_window(12)
    assert len(fit) == 10 and len(hold) == 2
    assert len(split_window(10)[1]) == 0


def test_river_interface_scores_before_learning_and_warms_up(tiny_bundle):
    X = np.random.default_rng(4).normal(size=(120, 3))
    det = StreamDetector(tiny_bundle, warmup=30, window=60, refit_every=25, background=False)
    for x in X[:30]:
        assert math.isnan(det.score_one(x)) and det.predict_one(x) is None
        det.learn_one(x)
    assert det.fitted and det.n_fits == 1
    score = det.score_one(X[30])
    assert 0.0 <= score <= 1.0 and det.score_one(X[30]) == score  # scoring learns nothing
    assert det.predict_one(X[30]) in (0, 1)
    fit_idx, _ = split_window(30)
    expected = tiny_bundle.anomaly_proba(Featurizer(tiny_bundle.featurizer_config).fit(X[:30][fit_idx]).transform(X[30:31]))[0]
    assert score == pytest.approx(expected, abs=1e-6)
    for x in X[30:]:
        det.learn_one(x)
    assert det.n_fits == 1 + 90 // 25
    # PySAD's names and the batch interface
    assert det.fit_partial is not None and det.score_partial(X[0]) == det.score_one(X[0])
    batch = det.decision_function(X[:5])
    np.testing.assert_allclose(batch, [det.score_one(x) for x in X[:5]], atol=1e-5)
    assert set(det.predict(X[:20])) <= {0, 1}
    det.fit(X[:50])
    assert det.n_seen == 50 and det.fitted
    with pytest.raises(ValueError, match="expected 3"):
        det.score_one(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        det.learn_one(np.array([0.0, np.nan, 1.0]))


def test_a_fixed_threshold_flags_scores_above_it(tiny_bundle):
    X = np.random.default_rng(5).normal(size=(60, 2))
    det = StreamDetector(tiny_bundle, threshold=0.5, warmup=20, window=40, background=False)
    for x in X:
        score, flag = det.process_one(x)
        assert flag is None if math.isnan(score) else flag == int(score > 0.5)


def test_bad_settings_are_refused(tiny_bundle):
    for kwargs, message in (
        ({"contamination": 0.0}, "contamination"),
        ({"warmup": 5}, "warmup"),
        ({"warmup": 50, "window": 20}, "window"),
        ({"refit_every": 0}, "refit_every"),
        ({"threshold": math.inf}, "threshold"),
    ):
        with pytest.raises(ValueError, match=message):
            StreamDetector(tiny_bundle, background=False, **kwargs)


def test_background_refits_swap_in_the_same_fits_as_inline_ones(tiny_bundle):
    """Rows arriving during a refit are scored with the current fit; waiting for each refit
    before the next row gives exactly the inline results."""
    X = np.random.default_rng(6).normal(size=(160, 3))
    kw = dict(contamination=0.1, warmup=30, window=60, refit_every=40, seed=1)
    with StreamDetector(tiny_bundle, background=False, **kw) as det:
        inline = [det.process_one(x) for x in X]
    with StreamDetector(tiny_bundle, background=True, **kw) as det:
        background = []
        for x in X:
            background.append(det.process_one(x))
            if det._pending is not None:
                det._pending.result(timeout=120)
        assert det.n_fits == 1 + (160 - 30) // 40
    np.testing.assert_allclose([s for s, _ in background], [s for s, _ in inline], rtol=0, atol=1e-12, equal_nan=True)
    assert [f for _, f in background] == [f for _, f in inline]
    # without waiting, rows go on being scored while the worker fits
    with StreamDetector(tiny_bundle, background=True, **kw) as det:
        out = [det.process_one(x) for x in X]
    assert all(f in (0, 1) for _, f in out[30:])


def test_the_refit_worker_never_reruns_the_callers_script(tmp_path, tiny_bundle):
    """A script without a ``__main__`` guard runs once: the worker is not a multiprocessing child."""
    import subprocess
    import sys

    bundle_path = tiny_bundle.save(tmp_path / "tiny.bundle.zip")
    marker = tmp_path / "runs.txt"
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import numpy as np\n"
        "from anomaly_gym.agents import load_bundle\n"
        "from anomaly_gym.detectors.stream import StreamDetector\n"
        f"open({str(marker)!r}, 'a').write('run\\n')\n"
        f"det = StreamDetector(load_bundle({str(bundle_path)!r}, device='cpu'), warmup=20, window=40, refit_every=10)\n"
        "for x in np.random.default_rng(0).normal(size=(80, 2)):\n"
        "    det.process_one(x)\n"
        "    if det._pending is not None:\n"
        "        det._pending.result(timeout=120)\n"
        "print(det.n_fits)\n"
        "det.close()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["6"]  # after the warm-up, then 5 of the 6 refits (the last is due at the last row)
    assert marker.read_text() == "run\n"
