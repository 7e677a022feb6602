"""``anomaly-gym datasets``: fetch public benchmark datasets into a local cache.

The logic (manifest, download, checks, checksums) lives in :mod:`anomaly_gym.envs.datasets`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomaly_gym.envs.datasets import (  # noqa: F401  (re-exported for scripts and tests)
    ADBENCH_BASE_URL,
    ADBENCH_CLASSICAL,
    ADBENCH_SHA256,
    CHECKSUM_HELP,
    SUMS_FILE,
    FetchResult,
    VerificationError,
    check_npz,
    default_data_dir,
    download,
    fetch_one,
    read_sums,
    resolve_names,
    sha256_file,
    write_sums,
)
from anomaly_gym.scripts._args import add_list_argument


def add_parser(sub) -> None:
    p = sub.add_parser("datasets", help="fetch public benchmark datasets into a local cache")
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    f = dsub.add_parser(
        "fetch",
        help="download a collection (adbench: ADBench's Classical datasets) into the cache",
        description="Download ADBench's Classical datasets (Han et al., NeurIPS 2022; the .npz files in "
        "adbench/datasets/Classical/ of github.com/Minqi824/ADBench) and store each as NAME.npz, ready for "
        "--sources/--targets. Files already in the cache are verified and kept. " + CHECKSUM_HELP,
    )
    f.add_argument("collection", choices=("adbench",), help="the collection to fetch")
    f.add_argument("--to", type=Path, default=None, metavar="DIR", help="cache folder (default: $ANOMALY_GYM_DATA/adbench, else ~/.cache/anomaly-gym/adbench)")
    f.add_argument(
        "--base-url", default=ADBENCH_BASE_URL, metavar="URL", help="where the upstream files are (http(s):// or file://; default: the ADBench repository)"
    )
    add_list_argument(f, "--names", default=None, metavar="NAME", help="only these datasets (names as stored, e.g. breastw cardio; default: all 47)")
    f.add_argument("--force", action="store_true", help="download again even when a verified copy is cached")
    f.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    f.set_defaults(func=run_fetch)
    ls = dsub.add_parser("list", help="the datasets of a collection and whether each is cached")
    ls.add_argument("collection", choices=("adbench",))
    ls.add_argument("--to", type=Path, default=None, metavar="DIR", help="cache folder (default as for fetch)")
    ls.set_defaults(func=run_list)


def run_fetch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    names = resolve_names(args.names)
    folder = Path(args.to) if args.to is not None else default_data_dir(args.collection)
    folder.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    results: list[FetchResult] = []
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("fetching", total=len(names))
        for name in names:
            bar.update(job, description=f"{name}")
            result = fetch_one(name, folder, args.base_url, force=args.force, timeout=args.timeout)
            results.append(result)
            bar.advance(job)
            if result.status == "failed" and "are you offline" in result.detail:
                # Every later file would fail alike: stop with one clear message.
                results += [FetchResult(n, "failed", "skipped: the server cannot be reached") for n in names[len(results) :]]
                break
    from rich.markup import escape

    for r in results:
        mark = {"downloaded": "[green]downloaded[/green]", "cached": "    cached", "failed": "    [red]FAILED[/red]"}[r.status]
        console.print(f"{mark} {escape(r.name)}: {escape(r.detail)}", soft_wrap=True, highlight=False)
    counts = {s: sum(r.status == s for r in results) for s in ("downloaded", "cached", "failed")}
    print(
        f"{folder}: {counts['downloaded']} downloaded, {counts['cached']} cached, {counts['failed']} failed "
        f"(checksums in {folder / SUMS_FILE}, recorded on first download)"
    )
    return 1 if counts["failed"] else 0


def run_list(args: argparse.Namespace) -> int:
    folder = Path(args.to) if args.to is not None else default_data_dir(args.collection)
    sums = read_sums(folder)
    print(f"ADBench Classical datasets ({len(ADBENCH_CLASSICAL)}), cache {folder}:")
    for name, (upstream, shape) in ADBENCH_CLASSICAL.items():
        cached = (folder / f"{name}.npz").is_file()
        size = f"{shape[0]:,} x {shape[1]}" if shape else "size not listed"
        state = "cached" + (", sha256 recorded" if f"{name}.npz" in sums else "") if cached else "-"
        print(f"  {name:<18} {upstream:<26} {size:<18} {state}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from anomaly_gym.scripts.cli import main

    sys.exit(main(["datasets", *sys.argv[1:]]))
