"""Every fenced example of README.md runs as written.

Python blocks run in order in one namespace (as a reader would paste them); shell blocks
run with bash in the same working folder.  That folder holds the files the examples name
(``data.csv``, ``target.csv``, ``target.npz``, ``metrics.csv``, ``policy.bundle.zip``,
``old.bundle.zip``), links to ``configs/`` and, when present, ``../shared``.

A comment just above a block changes how it runs:

- ``<!-- example: skip (why) -->``: not run (for instance ``make test``, which is CI itself);
- ``<!-- example: slow -->``: runs only with ``-m slow`` (a short variant runs by default);
- ``<!-- example: background N -->``: a command that never ends by itself (``tail -f``):
  it runs for N seconds and must have printed output by then.

Blocks marked ``text`` are synopses and are checked by :func:`test_every_flag_the_readme_mentions_exists`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
FENCE = re.compile(r"(?:<!-- example: (?P<directive>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


@dataclass
class Example:
    line: int
    lang: str
    body: str
    directive: str

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def examples() -> list[Example]:
    text = README.read_text()
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        found.append(Example(line, m.group("lang"), m.group("body"), (m.group("directive") or "").strip()))
    return found


RUNNABLE = [e for e in examples() if e.lang in ("python", "bash")]


def _marks(example: Example):
    marks = []
    if example.directive.startswith("slow"):
        marks.append(pytest.mark.slow)
    return marks


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The folder the README's examples run in, holding the files they name."""
    base = tmp_path_factory.mktemp("readme")
    work = base / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    if SHARED.is_dir():
        (base / "shared").symlink_to(SHARED)
    _make_files(work)
    return work


def _make_files(work: Path) -> None:
    from anomaly_gym.agents import PolicyBundle, make_agent
    from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task

    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(400, 3)), 4)
    X[[40, 150, 333]] += 6.0
    stamps = [f"2024-05-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(len(X))]
    lines = ["ts,a,b,c"] + [f"{t},{a},{b},{c}" for t, (a, b, c) in zip(stamps, X)]
    (work / "data.csv").write_text("\n".join(lines) + "\n")
    task = make_synthetic_task("global", n_rows=400, n_features=3, seed=1)
    rows = ["a,b,c,label"] + [f"{a:.5f},{b:.5f},{c:.5f},{int(y)}" for (a, b, c), y in zip(task.X, task.y)]
    (work / "target.csv").write_text("\n".join(rows) + "\n")
    np.savez(work / "target.npz", X=task.X, y=task.y)
    t = np.arange(3000)
    values = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(size=len(t))
    metric_rows = ["timestamp,value"] + [f"{1714521600 + 300 * i},{v:.4f}" for i, v in enumerate(values)]
    (work / "metrics.csv").write_text("\n".join(metric_rows) + "\n")
    config = FeaturizerConfig(detectors=("iforest", "ecod", "hbos", "knn"), descriptors=False)
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("local", n_rows=300, seed=0)], featurizer=config)
    model = make_agent("ppo", env, net_arch=[], device="cpu", seed=0, n_steps=64, batch_size=64).learn(256)
    PolicyBundle(model, config, {"train_tasks": ["synthetic/local"]}).save(work / "policy.bundle.zip")
    _write_legacy_bundle(work / "old.bundle.zip", model, config)


def _write_legacy_bundle(path: Path, model, config) -> None:
    """A bundle as releases before format 3 wrote it (bundle.json + SB3's pickled model.zip)."""
    import io
    import json
    import zipfile

    buffer = io.BytesIO()
    model.save(buffer)
    header = {"format": "anomaly-gym-policy-bundle", "format_version": 1, "algo": "ppo", "featurizer": config.to_dict(), "metadata": {}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", json.dumps(header))
        zf.writestr("model.zip", buffer.getvalue())


@pytest.fixture(scope="module")
def namespace():
    return {"__name__": "__readme__"}


@pytest.mark.parametrize("example", [pytest.param(e, id=e.id, marks=_marks(e)) for e in RUNNABLE])
def test_readme_example_runs_as_written(example: Example, workdir: Path, namespace: dict, monkeypatch):
    if example.directive.startswith("skip"):
        pytest.skip(f"{example.id}: {example.directive}")
    if "../shared/data" in example.body and not (workdir.parent / "shared" / "data").is_dir():
        pytest.skip(f"{example.id} reads ../shared/data, which is absent")
    monkeypatch.chdir(workdir)
    if example.lang == "python":
        code = compile(example.body, example.id, "exec")
        exec(code, namespace)  # noqa: S102 - the README's own code
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if example.directive.startswith("background"):
        seconds = float(example.directive.split()[1])
        proc = subprocess.Popen(
            ["bash", "-c", example.body], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            out, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            out, err = proc.communicate()
        assert out.strip(), f"{example.id} printed nothing in {seconds:.0f} s:\n{err[-3000:]}"
        assert '"status": "ok"' in out, f"{example.id} scored no row in {seconds:.0f} s:\n{out[-2000:]}\n{err[-3000:]}"
        return
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", example.body], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{example.id} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"


# --------------------------------------------------------------------------- flags


FLAG = re.compile(r"anomaly-gym ((?:[a-z-]+ )?[a-z-]+)\b([^\n`|]*)")


def _mentions() -> list[tuple[str, str]]:
    """(command words, flag) for every ``anomaly-gym CMD ... --flag`` in the README."""
    found = []
    for m in FLAG.finditer(README.read_text()):
        words, rest = m.group(1).split(), m.group(2)
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            found.append((" ".join(words), flag))
    return sorted(set(found))


def _parser_for(words: list[str]):
    from anomaly_gym.scripts import cli

    parser = cli.build_parser()
    for word in words:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs or word not in subs[0].choices:
            return parser
        parser = subs[0].choices[word]
    return parser


def test_every_flag_the_readme_mentions_exists():
    missing = []
    for words, flag in _mentions():
        parser = _parser_for(words.split())
        options = {o for a in parser._actions for o in a.option_strings}
        if flag not in options:
            missing.append(f"anomaly-gym {words} {flag}")
    assert not missing, "the README names flags the commands do not have:\n" + "\n".join(missing)


def test_every_subcommand_answers_help():
    from anomaly_gym.scripts import cli

    parser = cli.build_parser()
    commands = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0].choices
    for name in commands:
        with pytest.raises(SystemExit) as stop:
            cli.main([name, "--help"])
        assert stop.value.code == 0, name


def test_list_flags_take_commas_everywhere():
    from anomaly_gym.scripts import cli

    parser = cli.build_parser()
    assert parser.parse_args(["train", "--sources", "builtin,data/x"]).sources == ["builtin", "data/x"]
    assert parser.parse_args(["train", "--sources", "builtin", "data/x"]).sources == ["builtin", "data/x"]
    assert parser.parse_args(["adapt", "--data", "t.csv", "--out", "o.zip", "--columns", "f0,f1"]).columns == ["f0", "f1"]
    assert parser.parse_args(["benchmark", "--sources", "builtin,data/x"]).sources == ["builtin", "data/x"]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--sources", "builtin,,x"])


def test_version_flag_prints_the_installed_version(capsys):
    from importlib import metadata

    from anomaly_gym.scripts import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"anomaly-gym {metadata.version('anomaly-gym')}"


def test_every_command_that_writes_takes_the_same_output_flags():
    from anomaly_gym.scripts import cli

    parser = cli.build_parser()
    for words in (["train"], ["adapt"], ["detect"], ["benchmark"], ["nab", "benchmark"], ["bundle", "convert"]):
        options = {o for a in _parser_for(words)._actions for o in a.option_strings}
        assert {"-o", "--out", "--output"} <= options, words
    args = parser.parse_args(["adapt", "--data", "t.csv", "--output", "a.zip"])
    assert str(args.out) == "a.zip"
    assert parser.parse_args(["detect", "in.csv", "--out", "s.csv"]).output == "s.csv"


def _leaf_parsers(parser=None, words=()):
    """(command words, parser) of every command that runs (not the groups like ``bench``)."""
    from anomaly_gym.scripts import cli

    parser = parser or cli.build_parser()
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not subs:
        return [(" ".join(words), parser)]
    found = []
    for name, child in subs[0].choices.items():
        found += _leaf_parsers(child, (*words, name))
    return found


def test_the_same_ideas_have_the_same_flags_on_every_command():
    leaves = dict(_leaf_parsers())
    assert len(leaves) > 15
    options = {words: {o for a in p._actions for o in a.option_strings} for words, p in leaves.items()}
    for words, opts in options.items():  # verbosity, before or after the command's name
        assert {"-v", "--verbose", "-q", "--quiet"} <= opts, words
    for words in ("train", "adapt", "detect", "demo", "benchmark", "bench env"):
        assert "--device" in options[words], words
    for words in ("adapt", "detect", "tasks", "bench featurizer", "bench adapt"):
        assert "--data" in options[words], words
    for words in ("adapt", "tasks"):
        assert "--label-column" in options[words], words
    for words in ("train", "adapt", "demo", "bench env", "bench detect"):
        assert "--seed" in options[words], words
    for words in ("adapt", "detect", "benchmark", "bench detect", "bench adapt"):
        assert "--model" in options[words], words


def test_verbosity_flags_work_before_and_after_the_command():
    from anomaly_gym.scripts import cli

    parser = cli.build_parser()
    assert parser.parse_args(["-v", "tasks"]).verbose is True
    assert parser.parse_args(["tasks", "-v"]).verbose is True
    assert parser.parse_args(["tasks"]).verbose is False
    assert parser.parse_args(["bench", "env", "-q"]).quiet is True
    assert parser.parse_args(["-q", "detect", "x.csv", "--data", "y.csv"]).data == ["y.csv"]
    with pytest.raises(SystemExit):
        parser.parse_args(["tasks", "-v", "-q"])
    with pytest.raises(SystemExit):  # one before and one after the name: refused in main
        cli.main(["-v", "tasks", "-q"])
