"""Public benchmark datasets: the ADBench manifest, fetching into a local cache, and checksums.

:func:`fetch_one` downloads one file of ADBench's *Classical* collection (Han et al.,
NeurIPS 2022; the ``.npz`` files in ``adbench/datasets/Classical/`` of the
``Minqi824/ADBench`` GitHub repository) and stores it as ``NAME.npz``, the names every
``--sources``/``--targets`` folder uses (``4_breastw.npz`` becomes ``breastw.npz``).

Checksums: no SHA-256 of the upstream files ships with this package, because none could
be checked against the upstream files when the manifest was written.  The first download
of a file records its SHA-256 in ``SHA256SUMS`` in the cache folder (trust on first use);
later downloads, cached files, and every read through
:func:`~anomaly_gym.envs.sources.load_npz` are checked against that record
(:func:`verify_recorded`).  Every fetched file is also checked for content: it loads with
``numpy.load`` (no pickles), holds ``X`` (2-D, numeric) and ``y`` (one 0/1 label per row),
and, where the manifest knows it, has the published number of rows and columns.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: Where the files are published (raw files of the ADBench repository).
ADBENCH_BASE_URL = "https://raw.githubusercontent.com/Minqi824/ADBench/main/adbench/datasets/Classical/"

#: Name used here -> (upstream file name, (rows, columns) or None).  The shapes given are
#: those of ADBench's dataset table, as found in the files themselves; ``None`` where
#: they were not checked against a copy of the file.
ADBENCH_CLASSICAL: dict[str, tuple[str, tuple[int, int] | None]] = {
    "ALOI": ("1_ALOI.npz", (49534, 27)),
    "annthyroid": ("2_annthyroid.npz", None),
    "backdoor": ("3_backdoor.npz", None),
    "breastw": ("4_breastw.npz", (683, 9)),
    "campaign": ("5_campaign.npz", (41188, 62)),
    "cardio": ("6_cardio.npz", None),
    "Cardiotocography": ("7_Cardiotocography.npz", (2114, 21)),
    "celeba": ("8_celeba.npz", (202599, 39)),
    "census": ("9_census.npz", None),
    "cover": ("10_cover.npz", (286048, 10)),
    "donors": ("11_donors.npz", (619326, 10)),
    "fault": ("12_fault.npz", (1941, 27)),
    "fraud": ("13_fraud.npz", None),
    "glass": ("14_glass.npz", (214, 7)),
    "Hepatitis": ("15_Hepatitis.npz", (80, 19)),
    "http": ("16_http.npz", (567498, 3)),
    "InternetAds": ("17_InternetAds.npz", (1966, 1555)),
    "Ionosphere": ("18_Ionosphere.npz", None),
    "landsat": ("19_landsat.npz", (6435, 36)),
    "letter": ("20_letter.npz", None),
    "Lymphography": ("21_Lymphography.npz", (148, 18)),
    "magic.gamma": ("22_magic.gamma.npz", (19020, 10)),
    "mammography": ("23_mammography.npz", None),
    "mnist": ("24_mnist.npz", (7603, 100)),
    "musk": ("25_musk.npz", (3062, 166)),
    "optdigits": ("26_optdigits.npz", None),
    "PageBlocks": ("27_PageBlocks.npz", (5393, 10)),
    "pendigits": ("28_pendigits.npz", None),
    "Pima": ("29_Pima.npz", (768, 8)),
    "satellite": ("30_satellite.npz", (6435, 36)),
    "satimage-2": ("31_satimage-2.npz", None),
    "shuttle": ("32_shuttle.npz", (49097, 9)),
    "skin": ("33_skin.npz", (245057, 3)),
    "smtp": ("34_smtp.npz", (95156, 3)),
    "SpamBase": ("35_SpamBase.npz", (4207, 57)),
    "speech": ("36_speech.npz", None),
    "Stamps": ("37_Stamps.npz", (340, 9)),
    "thyroid": ("38_thyroid.npz", None),
    "vertebral": ("39_vertebral.npz", None),
    "vowels": ("40_vowels.npz", None),
    "Waveform": ("41_Waveform.npz", (3443, 21)),
    "WBC": ("42_WBC.npz", (223, 9)),
    "WDBC": ("43_WDBC.npz", (367, 30)),
    "Wilt": ("44_Wilt.npz", (4819, 5)),
    "wine": ("45_wine.npz", (129, 13)),
    "WPBC": ("46_WPBC.npz", (198, 33)),
    "yeast": ("47_yeast.npz", None),
}

#: SHA-256 of upstream files known for certain, name -> hex digest.  Empty: see the module docstring.
ADBENCH_SHA256: dict[str, str] = {}

SUMS_FILE = "SHA256SUMS"
CHUNK = 1 << 20

CHECKSUM_HELP = (
    "Checksums: this package ships no SHA-256 of the upstream files (none could be checked against them), "
    "so the first download of each file records its SHA-256 in SHA256SUMS in the cache folder (trust on first use) "
    "and later downloads and cached files are verified against it. Every file is also checked to load with "
    "numpy.load, to hold X (2-D, numeric) and y (0/1, one label per row) and, where known, to have the published "
    "number of rows and columns."
)


def default_data_dir(collection: str = "adbench") -> Path:
    """``$ANOMALY_GYM_DATA/<collection>``, else ``~/.cache/anomaly-gym/<collection>``."""
    env = os.environ.get("ANOMALY_GYM_DATA")
    return (Path(env) if env else Path.home() / ".cache" / "anomaly-gym") / collection


# --------------------------------------------------------------------------- checks


class VerificationError(ValueError):
    """A downloaded or cached file is not what it should be."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_npz(path: Path, expected_shape: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """Check an ADBench-format file; return (rows, columns, anomalies).

    Raises:
        VerificationError: it does not load, lacks ``X`` or ``y``, or they are malformed.
    """
    import numpy as np

    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise VerificationError(
            f"{path.name} is a Git LFS pointer, not the data; fetch it from a URL that serves the LFS "
            "content (e.g. https://media.githubusercontent.com/media/...)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if not {"X", "y"} <= keys:
                raise VerificationError(f"{path.name} needs arrays X and y; it holds {sorted(keys)}")
            X, y = data["X"], data["y"]
    except VerificationError:
        raise
    except Exception as exc:  # not a zip/npy, truncated, or object arrays (pickles are refused)
        raise VerificationError(f"{path.name} does not load as an .npz file ({type(exc).__name__}: {exc})") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise VerificationError(f"{path.name}: X must be a non-empty 2-D array, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise VerificationError(f"{path.name}: X must be numeric, got dtype {X.dtype}")
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != X.shape[0]:
        raise VerificationError(f"{path.name}: y must hold one label per row of X ({X.shape[0]}), got shape {y.shape}")
    if y.dtype.kind not in "biuf" or not np.isin(np.unique(y), [0, 1]).all():
        raise VerificationError(f"{path.name}: y must be 0 (normal) or 1 (anomaly), found {np.unique(y)[:5].tolist()}")
    if expected_shape is not None and tuple(X.shape) != tuple(expected_shape):
        raise VerificationError(f"{path.name}: X has shape {X.shape}, the published size is {tuple(expected_shape)}")
    return int(X.shape[0]), int(X.shape[1]), int(y.sum())


def read_sums(folder: Path) -> dict[str, str]:
    """``SHA256SUMS`` of ``folder`` as file name -> digest (``sha256sum -c`` format)."""
    path = Path(folder) / SUMS_FILE
    sums = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            digest, _, name = line.strip().partition("  ")
            if digest and name:
                sums[name.strip()] = digest.lower()
    return sums


def write_sums(folder: Path, sums: dict[str, str]) -> None:
    path = Path(folder) / SUMS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{sums[name]}  {name}\n" for name in sorted(sums, key=str.lower)))
    tmp.replace(path)


# --------------------------------------------------------------------------- fetching


@dataclass
class FetchResult:
    name: str
    status: str  # "downloaded", "cached", "failed"
    detail: str = ""
    sha256: str = ""


def file_url(base_url: str, file_name: str) -> str:
    return base_url.rstrip("/") + "/" + urllib.parse.quote(file_name)


def download(url: str, dest: Path, timeout: float = 60.0) -> str:
    """Stream ``url`` into ``dest`` (via a ``.part`` file); return its SHA-256.

    Raises:
        ConnectionError: the server cannot be reached (offline, DNS, refused).
        FileNotFoundError: the server has no such file.
    """
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as fh:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                fh.write(chunk)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        if exc.code == 404:
            raise FileNotFoundError(f"{url}: not found on the server (HTTP 404)") from None
        raise ConnectionError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        part.unlink(missing_ok=True)
        reason = exc.reason
        if isinstance(reason, FileNotFoundError) or url.startswith("file:"):
            raise FileNotFoundError(f"{url}: no such file ({reason})") from None
        raise ConnectionError(
            f"cannot reach {urllib.parse.urlsplit(url).netloc or url} ({reason}); are you offline? Download the files "
            "elsewhere and pass --base-url file:///path/to/folder, or copy NAME.npz files into the cache folder"
        ) from None
    except (TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise ConnectionError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def fetch_one(name: str, folder: Path, base_url: str, *, force: bool = False, timeout: float = 60.0) -> FetchResult:
    """Fetch and verify one dataset of the ADBench manifest into ``folder/NAME.npz``."""
    upstream, shape = ADBENCH_CLASSICAL[name]
    dest = folder / f"{name}.npz"
    sums = read_sums(folder)
    recorded = ADBENCH_SHA256.get(name) or sums.get(dest.name)
    if dest.is_file() and not force:
        digest = sha256_file(dest)
        if recorded is not None and digest != recorded:
            return FetchResult(
                name,
                "failed",
                f"cached file's SHA-256 {digest[:12]}... differs from the recorded {recorded[:12]}...; delete {dest} or pass --force to download it again",
            )
        try:
            rows, cols, anomalies = check_npz(dest, shape)
        except VerificationError as exc:
            return FetchResult(name, "failed", f"cached file is bad: {exc}; delete it or pass --force")
        if recorded is None:
            sums[dest.name] = digest
            write_sums(folder, sums)
        return FetchResult(name, "cached", f"{rows:,} x {cols}, {anomalies:,} anomalies", digest)

    part = dest.with_name(dest.name + ".part")
    try:
        digest = download(file_url(base_url, upstream), dest, timeout)
        if recorded is not None and digest != recorded:
            raise VerificationError(
                f"SHA-256 mismatch: got {digest}, expected {recorded} "
                f"({'this package' if name in ADBENCH_SHA256 else SUMS_FILE + ', recorded on the first download'})"
            )
        rows, cols, anomalies = check_npz(part, shape)
    except (VerificationError, ConnectionError, FileNotFoundError) as exc:
        part.unlink(missing_ok=True)
        return FetchResult(name, "failed", str(exc))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    sums = read_sums(folder)
    sums[dest.name] = digest
    write_sums(folder, sums)
    return FetchResult(name, "downloaded", f"{rows:,} x {cols}, {anomalies:,} anomalies", digest)


def resolve_names(names: list[str] | None) -> list[str]:
    if not names:
        return list(ADBENCH_CLASSICAL)
    lookup = {n.lower(): n for n in ADBENCH_CLASSICAL}
    lookup.update({f.lower().removesuffix(".npz"): n for n, (f, _) in ADBENCH_CLASSICAL.items()})
    out, unknown = [], []
    for raw in names:
        for token in raw.split(","):
            token = token.strip()
            if not token:
                continue
            key = token.lower().removesuffix(".npz")
            (out.append(lookup[key]) if key in lookup else unknown.append(token))
    if unknown:
        raise ValueError(f"unknown ADBench dataset(s) {unknown}; known: {', '.join(ADBENCH_CLASSICAL)}")
    return list(dict.fromkeys(out))


def verify_recorded(path: str | Path) -> None:
    """Check ``path`` against the ``SHA256SUMS`` of its folder, when that file lists it.

    Raises:
        VerificationError: the file's SHA-256 differs from the recorded one.
    """
    path = Path(path)
    recorded = read_sums(path.parent).get(path.name)
    if recorded is None:
        return
    digest = sha256_file(path)
    if digest != recorded:
        raise VerificationError(
            f"{path}: SHA-256 {digest[:16]}... differs from the {recorded[:16]}... recorded in "
            f"{path.parent / SUMS_FILE} when it was fetched; the file changed since. Fetch it again "
            f"(anomaly-gym datasets fetch adbench --to {path.parent} --names {path.stem} --force)"
        )
