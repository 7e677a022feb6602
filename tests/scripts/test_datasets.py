"""``anomaly-gym datasets fetch``: download from a file:// folder, verify, record checksums, fail cleanly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from anomaly_gym.envs import datasets as envs_datasets
from anomaly_gym.envs.sources import load_adbench_dir
from anomaly_gym.scripts import datasets
from anomaly_gym.scripts.cli import main


def _npz(path: Path, n: int = 60, d: int = 4, seed: int = 0, **arrays) -> Path:
    rng = np.random.default_rng(seed)
    data = {"X": rng.normal(size=(n, d)), "y": (np.arange(n) % 10 == 0).astype(np.int64)}
    data.update(arrays)
    np.savez(path, **data)
    return path


@pytest.fixture
def upstream(tmp_path) -> Path:
    """A fake upstream folder with ADBench's file names."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    _npz(folder / "2_annthyroid.npz", seed=1)
    _npz(folder / "47_yeast.npz", n=80, d=3, seed=2)
    _npz(folder / "4_breastw.npz", n=683, d=9, seed=3)  # the published shape
    return folder


def _fetch(cache: Path, upstream: Path, *names: str, extra=()) -> int:
    return main(["datasets", "fetch", "adbench", "--to", str(cache), "--base-url", upstream.as_uri(), "--names", *names, *extra])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_stores_project_names_and_records_checksums(tmp_path, upstream):
    cache = tmp_path / "cache"
    assert _fetch(cache, upstream, "annthyroid", "yeast", "breastw") == 0
    assert sorted(p.name for p in cache.glob("*.npz")) == ["annthyroid.npz", "breastw.npz", "yeast.npz"]
    sums = datasets.read_sums(cache)
    assert sums == {
        "annthyroid.npz": _sha(upstream / "2_annthyroid.npz"),
        "yeast.npz": _sha(upstream / "47_yeast.npz"),
        "breastw.npz": _sha(upstream / "4_breastw.npz"),
    }
    # the file is `sha256sum -c` compatible and the folder loads as a task source
    line = (cache / "SHA256SUMS").read_text().splitlines()[0]
    assert line.split("  ")[1] in sums
    tasks = load_adbench_dir(cache)
    assert [t.name for t in tasks] == ["annthyroid", "breastw", "yeast"] and tasks[2].n_rows == 80
    assert not list(cache.glob("*.part"))


def test_cached_files_are_verified_not_downloaded_again(tmp_path, upstream, monkeypatch, capsys):
    cache = tmp_path / "cache"
    assert _fetch(cache, upstream, "annthyroid") == 0
    monkeypatch.setattr(envs_datasets.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded again"))
    assert _fetch(cache, upstream, "annthyroid") == 0
    assert "0 downloaded, 1 cached" in capsys.readouterr().out
    # a cached file changed after its checksum was recorded is reported, not trusted
    _npz(cache / "annthyroid.npz", seed=5)
    assert _fetch(cache, upstream, "annthyroid") == 1
    assert "differs from the recorded" in capsys.readouterr().err


def test_every_read_of_a_fetched_file_checks_its_recorded_checksum(tmp_path, upstream, capsys):
    from anomaly_gym.envs import load_adbench_dir, load_npz

    cache = tmp_path / "cache"
    assert _fetch(cache, upstream, "annthyroid") == 0
    assert load_npz(cache / "annthyroid.npz").n_rows == 60  # verified, then read
    _npz(cache / "annthyroid.npz", seed=5)  # changed after the checksum was recorded
    with pytest.raises(ValueError, match="differs from the .* recorded in .*SHA256SUMS"):
        load_npz(cache / "annthyroid.npz")
    with pytest.raises(ValueError, match="--force"):
        load_adbench_dir(cache)
    # a folder without SHA256SUMS (e.g. files copied by hand) is read without a check
    (tmp_path / "plain").mkdir()
    _npz(tmp_path / "plain" / "mine.npz", seed=1)
    assert load_npz(tmp_path / "plain" / "mine.npz").name == "mine"


def test_checksum_mismatch_on_a_later_download_is_caught_and_the_file_removed(tmp_path, upstream, capsys):
    cache = tmp_path / "cache"
    assert _fetch(cache, upstream, "yeast") == 0
    recorded = datasets.read_sums(cache)["yeast.npz"]
    (cache / "yeast.npz").unlink()
    _npz(upstream / "47_yeast.npz", n=80, d=3, seed=42)  # upstream now serves other bytes
    assert _fetch(cache, upstream, "yeast") == 1
    err = capsys.readouterr().err
    assert "SHA-256 mismatch" in err
    assert not (cache / "yeast.npz").exists() and not list(cache.glob("*.part"))
    assert datasets.read_sums(cache)["yeast.npz"] == recorded  # the first record stands
    # --force replaces a cached copy but is still held to the recorded checksum
    assert _fetch(cache, upstream, "yeast", extra=["--force"]) == 1


def test_manifest_checksum_is_checked_when_known(tmp_path, upstream, monkeypatch, capsys):
    monkeypatch.setitem(datasets.ADBENCH_SHA256, "annthyroid", "0" * 64)
    assert _fetch(tmp_path / "cache", upstream, "annthyroid") == 1
    assert "expected 0000" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "annthyroid.npz").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _npz(p, y=np.arange(60) % 3), "must be 0 (normal) or 1"),
        (lambda p: np.savez(p, X=np.ones((5, 2))), "needs arrays X and y"),
        (lambda p: _npz(p, y=np.zeros(7)), "one label per row"),
        (lambda p: p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n"), "Git LFS pointer"),
        (lambda p: p.write_bytes(b"<html>rate limited</html>"), "does not load as an .npz"),
        (lambda p: np.savez(p, X=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3)), "does not load"),
    ],
)
def test_bad_content_is_rejected_and_removed(tmp_path, upstream, make, message, capsys):
    make(upstream / "2_annthyroid.npz")
    assert _fetch(tmp_path / "cache", upstream, "annthyroid") == 1
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "cache").glob("annthyroid*"))
    assert "annthyroid.npz" not in datasets.read_sums(tmp_path / "cache")


def test_published_shape_is_checked(tmp_path, upstream, capsys):
    _npz(upstream / "4_breastw.npz", n=600, d=9)
    assert _fetch(tmp_path / "cache", upstream, "breastw") == 1
    assert "published size is (683, 9)" in capsys.readouterr().err


def test_missing_upstream_file_and_unknown_names(tmp_path, upstream, capsys):
    assert _fetch(tmp_path / "cache", upstream, "annthyroid", "cardio") == 1
    captured = capsys.readouterr()
    assert "no such file" in captured.err and "1 downloaded" in captured.out
    assert _fetch(tmp_path / "cache", upstream, "nosuch") == 2
    assert "unknown ADBench dataset" in capsys.readouterr().err


def test_offline_gives_a_clear_error_and_stops(tmp_path, capsys):
    # port 9 (discard) on localhost refuses the connection at once, as an offline machine does
    code = main(
        [
            "datasets",
            "fetch",
            "adbench",
            "--to",
            str(tmp_path / "c"),
            "--base-url",
            "http://127.0.0.1:9/x",
            "--names",
            "annthyroid",
            "yeast",
            "wine",
            "--timeout",
            "5",
        ]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "are you offline?" in captured.err and "--base-url file://" in captured.err
    assert "skipped: the server cannot be reached" in captured.err
    assert "0 downloaded, 0 cached, 3 failed" in captured.out


def test_names_and_default_folder(monkeypatch, tmp_path):
    assert len(datasets.ADBENCH_CLASSICAL) == 47
    assert datasets.resolve_names(["4_breastw.npz", "Cardio", "magic.gamma"]) == ["breastw", "cardio", "magic.gamma"]
    assert datasets.ADBENCH_CLASSICAL["satimage-2"][0] == "31_satimage-2.npz"
    monkeypatch.setenv("ANOMALY_GYM_DATA", str(tmp_path))
    assert datasets.default_data_dir() == tmp_path / "adbench"
    monkeypatch.delenv("ANOMALY_GYM_DATA")
    assert datasets.default_data_dir() == Path.home() / ".cache" / "anomaly-gym" / "adbench"
    help_text = datasets.CHECKSUM_HELP
    assert "trust on first use" in help_text and "SHA256SUMS" in help_text


def test_manifest_shapes_match_the_reference_copies(adbench_dir):
    """Every shape the manifest lists agrees with the reference copy, where there is one."""
    checked = 0
    for name, (_, shape) in datasets.ADBENCH_CLASSICAL.items():
        path = adbench_dir / f"{name}.npz"
        if shape is not None and path.is_file():
            with np.load(path) as data:
                assert tuple(data["X"].shape) == shape, name
            checked += 1
    assert checked >= 20
