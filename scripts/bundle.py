"""``anomaly-gym bundle``: inspect a policy bundle, convert an older pickled one.

The logic lives in :mod:`anomaly_gym.agents.bundle` and :mod:`anomaly_gym.agents.serialization`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("bundle", help="inspect a policy bundle or convert an older (pickled) one")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    show = bsub.add_parser("inspect", help="check a bundle (nothing in it is executed) and print what it holds")
    show.add_argument("path", type=Path, help="the bundle (.bundle.zip)")
    show.add_argument("--json", action="store_true", help="print bundle.json's header as JSON")
    show.set_defaults(func=run_inspect)
    conv = bsub.add_parser(
        "convert",
        help="rewrite a format 1/2 bundle (pickled) in the current, pickle-free format",
        description="Older bundles stored pickled Python objects, which run code when loaded. Converting reads "
        "the old file the old way (unpickling it) and writes the current format, which holds data only. "
        "Only convert files from a source you trust; --trust says that you do.",
    )
    conv.add_argument("source", type=Path, help="the older bundle")
    conv.add_argument("-o", "--out", "--output", dest="output", type=Path, required=True, help="where to write the converted bundle")
    conv.add_argument("--trust", action="store_true", help="confirm that you trust the source file (it is unpickled)")
    conv.set_defaults(func=run_convert)


def run_inspect(args: argparse.Namespace) -> int:
    from anomaly_gym.agents.bundle import load_bundle

    bundle = load_bundle(args.path, device="cpu")
    meta = bundle.metadata
    record = {
        "path": str(args.path),
        "algo": bundle.algo,
        "features": len(bundle.featurizer_config.feature_names()),
        "detectors": list(bundle.featurizer_config.detectors),
        "fitted_featurizer": bundle.featurizer is not None,
        "target_head": bundle.head is not None,
        "train_tasks": len(meta.get("train_tasks", [])),
        "val_auroc": meta.get("val_auroc"),
        "package_version": meta.get("package_version"),
        "adaptation": (meta.get("adaptation") or {}).get("mode"),
    }
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        for key, value in record.items():
            print(f"{key:>18}: {value}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from anomaly_gym.agents.bundle import convert_legacy_bundle

    if not args.trust:
        print(
            f"anomaly-gym bundle convert: refusing to unpickle {args.source} without --trust: older bundles hold pickled "
            "objects that can run code. Add --trust if you trust where the file came from.",
            file=sys.stderr,
        )
        return 2
    path, notes = convert_legacy_bundle(args.source, args.output, trust=True)
    for note in notes:
        print(f"anomaly-gym bundle convert: note: {note}", file=sys.stderr)
    print(f"wrote {path} (format 3: no pickle)")
    return 0
