"""``anomaly-gym bench stream-temporal``: rows/s, memory and time to the first scored row of the temporal stream scorer.

Runs in a fresh Python process so that the figures include the imports a real stream pays
(``anomaly_gym.envs.stream_policy`` only: numpy and Gymnasium, no torch, scikit-learn or PyOD).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, math, resource, sys, time
t0 = time.perf_counter()
from anomaly_gym.envs.stream_policy import StreamPolicy, TemporalScorer
policy = StreamPolicy.load(sys.argv[1]) if sys.argv[1] != "-" else None
if policy is None:
    from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
    policy = StreamPolicy(layers=[([[0.5] * len(OBSERVATION_NAMES)], [-4.0])])
scorer = TemporalScorer(policy)
rows, sample_every = int(sys.argv[2]), int(sys.argv[3])
x, ts = 10.0, 1.6e9
first = None
rss = []
t_start = time.perf_counter()
for i in range(rows):
    value = 10.0 + 3.0 * math.sin(i * 0.0218) + ((i * 7919) % 101) / 50.0
    scorer.process_one(value, ts + 300.0 * i)
    if first is None:
        first = time.perf_counter() - t0
    if i % sample_every == 0:
        rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20 if sys.platform.startswith("linux") else 0.0)
elapsed = time.perf_counter() - t_start
mods = [m for m in ("torch", "sklearn", "pyod") if m in sys.modules]
print(json.dumps({"rows": rows, "seconds": elapsed, "first_s": first, "rss_mb": rss,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "heavy_modules": mods}))
"""


def add_parser(bsub) -> None:
    p = bsub.add_parser("stream-temporal", help="temporal stream scorer: rows/s on one core, memory over a long stream, time to first scored row")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows streamed (default 1,000,000; the target speaks of 10,000,000)")
    p.add_argument("--policy", default="-", help="a stream policy JSON file (default: a fixed linear policy of the same shape)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, float]:
    if args.rows < 1000:
        raise ValueError(f"--rows must be at least 1000, got {args.rows}")
    cmd = [sys.executable, "-c", CHILD, str(args.policy), str(args.rows), str(max(1, args.rows // 20))]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark process failed: {done.stderr.strip()[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    rate = r["rows"] / r["seconds"]
    rss = r["rss_mb"]
    print(f"univariate stream, {r['rows']:,} rows, one process, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  throughput: {rate:,.0f} rows/s (target >= 5,000)")
    print(f"  first scored row {r['first_s']:.2f}s after start, imports included (target <= 2 s)")
    print(
        f"  resident memory: {rss[0]:.0f} MB after the first row, {rss[-1]:.0f} MB at the end, peak {r['peak_mb']:.0f} MB "
        f"(target < 300 MB; growth over the stream {rss[-1] - rss[0]:+.1f} MB)"
    )
    print(f"  heavy modules imported: {', '.join(r['heavy_modules']) or 'none'}")
    return {"rows/s": rate, "first scored row (s)": r["first_s"], "peak memory (MB)": r["peak_mb"]}
