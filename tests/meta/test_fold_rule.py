"""One fold rule for the benchmark's protocols: versions of one original dataset share a fold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from anomaly_gym.envs.tasks import Task
from anomaly_gym.meta.benchmark import protocol
from anomaly_gym.meta.benchmark.protocol import dataset_groups, fold_sources, plan_folds, split_groups
from anomaly_gym.meta.benchmark.results import write_folds
from anomaly_gym.meta.discover_benchmark import POLICY, _resume, dataset_folds


def _task(name: str, width: int, seed: int) -> Task:
    X = np.random.default_rng(seed).normal(size=(30, width))
    return Task(name, X, np.r_[np.zeros(27), np.ones(3)])


def _collection() -> list[Task]:
    """ADBench-like: landsat/satellite (36 columns), CIFAR10/SVHN/MVTec-AD embedding families whose
    widths differ once constant columns are dropped, and tabular datasets of other widths."""
    tabular = [_task("satellite", 36, 0), _task("landsat", 36, 1), _task("breastw", 9, 2), _task("WBC", 9, 3)]
    tabular += [_task(f"tab{w}", w, 10 + w) for w in (4, 5, 6, 7, 8)]
    images = [_task("CIFAR10_0", 40, 20), _task("CIFAR10_4", 38, 21), _task("CIFAR10_6", 40, 22)]
    images += [_task("SVHN_0", 40, 23), _task("SVHN_8", 39, 24)]
    images += [_task("MVTec-AD_bottle", 37, 25), _task("MVTec-AD_metal_nut", 40, 26)]
    return tabular + images


PAIRS = [
    ("landsat", "satellite"),
    ("breastw", "WBC"),
    ("CIFAR10_0", "CIFAR10_4"),
    ("CIFAR10_0", "CIFAR10_6"),
    ("SVHN_0", "SVHN_8"),
    ("MVTec-AD_bottle", "MVTec-AD_metal_nut"),
]


def test_groups_are_widths_and_name_families():
    groups = dataset_groups(_collection())
    assert ["breastw", "WBC"] in groups and ["landsat", "satellite"] in groups
    assert ["CIFAR10_0", "CIFAR10_4", "CIFAR10_6"] in groups and ["SVHN_0", "SVHN_8"] in groups
    assert ["MVTec-AD_bottle", "MVTec-AD_metal_nut"] in groups  # the family is the shortest shared prefix
    # a family overrides width: CIFAR10_0 and SVHN_0 share 40 columns but not a family
    assert not any({"CIFAR10_0", "SVHN_0"} <= set(g) for g in groups)
    assert protocol.name_families(["a_1", "b_1", "c"]) == {}  # the suffix alone makes no family


@pytest.mark.parametrize("k", [2, 3, 5])
def test_versions_share_a_fold_in_both_protocols_and_every_fold_has_sources(k):
    tasks = _collection()
    main = plan_folds(tasks, tasks, k)
    active = dataset_folds(tasks, k)
    assert {n: int(f) - 1 for n, f in main.items()} == active  # one rule
    for a, b in PAIRS:
        assert main[a] == main[b] and active[a] == active[b]
    assert len(set(main.values())) == k
    for fold in set(main.values()):
        kept = {s.name for s in fold_sources(tasks, tasks, main, fold)}
        held = {n for n, f in main.items() if f == fold}
        assert kept and not kept & held
    assert split_groups(tasks, main) == []


def test_the_plan_is_deterministic_and_seeded():
    tasks = _collection()
    first = plan_folds(tasks, tasks, 3)
    assert plan_folds(list(reversed(tasks)), list(reversed(tasks)), 3) == first
    assert dataset_folds(list(reversed(tasks)), 3) == dataset_folds(tasks, 3)
    assert any(plan_folds(tasks, tasks, 3, seed=s) != first for s in range(1, 6))


def test_a_single_group_is_split_with_a_warning_so_that_every_fold_keeps_sources(tmp_path):
    tasks = [_task(f"MVTec-AD_{c}", 20 + i % 2, i) for i, c in enumerate(("bottle", "cable", "grid", "pill", "tile"))]
    with pytest.warns(UserWarning, match="split across folds"):
        folds = plan_folds(tasks, tasks, 2)
    assert len(set(folds.values())) == 2
    for fold in set(folds.values()):
        assert fold_sources(tasks, tasks, folds, fold)
    assert split_groups(tasks, folds) == [sorted(t.name for t in tasks)]
    write_folds(tmp_path, tasks, tasks, folds)
    assert json.loads((tmp_path / "folds.json").read_text())["split"] == [sorted(t.name for t in tasks)]


def test_plain_tabular_plans_match_the_width_rule():
    """Without name families the plan is the width rule's: versions of one width, whole groups per fold."""
    tasks = [_task(f"d{i}", 3 + i % 6, i) for i in range(14)]
    folds = plan_folds(tasks, tasks, 4)
    for w in range(3, 9):
        assert len({folds[t.name] for t in tasks if t.n_features == w}) == 1
    sizes = sorted(list(folds.values()).count(f) for f in set(folds.values()))
    assert sizes == [3, 3, 4, 4]


def _results(out, fold_of, methods=(POLICY, "random")):
    rows = [{"dataset": n, "method": m, "seed": 0, "found@10": 1, "status": "ok", "fold": (f + 1) % 3} for n, f in fold_of.items() for m in methods]
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    curves = [{"dataset": n, "method": m, "seed": 0, "query": 1, "found": 1} for n in fold_of for m in methods]
    pd.DataFrame(curves).to_csv(out / "curves.csv", index=False)


def test_active_resume_reruns_the_meta_policy_where_the_fold_plan_changed(tmp_path):
    tasks = _collection()
    fold_of = dataset_folds(tasks, 3)
    _results(tmp_path, fold_of)  # a run without folds.json: its folds are unknown
    done = _resume(tmp_path, tasks, tasks, fold_of, None)
    assert {m for _, m, _ in done} == {"random"}
    frame = pd.read_csv(tmp_path / "results.csv")
    assert set(frame["method"]) == {"random"} and frame.set_index("dataset")["fold"].to_dict() == fold_of
    assert set(pd.read_csv(tmp_path / "curves.csv")["method"]) == {"random"}
    _results(tmp_path, fold_of)
    assert len(_resume(tmp_path, tasks, tasks, fold_of, None)) == 2 * len(tasks)  # same plan: everything holds
    fewer = [t for t in tasks if t.name != "tab4"]  # another plan: some folds' sources change
    changed = dataset_folds(fewer, 3)

    def sources(plan, names):
        return {d: sorted(n for n in names if plan[n] != plan[d]) for d in names}

    before = sources(fold_of, list(fold_of))
    after = sources(changed, list(changed))
    expected = {d for d in changed if before[d] == after[d]}
    assert expected != set(changed)  # the check below sees a change
    done = _resume(tmp_path, fewer, fewer, changed, None)
    assert {d for d, m, _ in done if m == POLICY} == expected
    assert "tab4" not in json.loads((tmp_path / "folds.json").read_text())["target_fold"]
    _results(tmp_path, changed)
    _resume(tmp_path, fewer, fewer, changed, None)
    extra = _task("extra", 5, 99)  # a source-only task joins every fold's sources: every policy row runs again
    done = _resume(tmp_path, fewer, [*fewer, extra], changed, None)
    assert {m for _, m, _ in done} == {"random"}


def test_twins_share_a_fold_and_leave_each_others_sources(tmp_path):
    """A table and a benchmark's one-hot copy of it differ in name, width and content: only the twin rule joins them."""
    from anomaly_gym.meta.benchmark.protocol import KNOWN_TWINS, join_twins, parse_twins, same_dataset
    from anomaly_gym.scripts._args import DEFAULT_TWINS

    assert parse_twins(DEFAULT_TWINS) == KNOWN_TWINS and parse_twins("none") == {}
    with pytest.raises(ValueError, match="NAME=NAME"):
        parse_twins("bank")
    targets = [_task("campaign", 50, 40)] + [_task(f"tab{w}", w, 10 + w) for w in (4, 5, 6, 7)]
    sources = targets + [_task("bank", 12, 41)]
    for twins, joined in (({}, False), ({"bank": "campaign"}, True)):
        s, t = join_twins(sources, twins), join_twins(targets, twins)
        assert same_dataset(s[-1], t[0]) is joined
        folds = plan_folds(s, t, 3)
        kept = {x.name for x in fold_sources(s, t, folds, folds["campaign"])}
        assert ("bank" in kept) is not joined and "campaign" not in kept
    assert [x.family for x in join_twins(sources, {"bank": "campaign"})] == ["bank", None, None, None, None, None]  # bank is already "bank"


def test_the_benchmark_holds_twins_out_together_and_records_them(tmp_path):
    from anomaly_gym.meta.benchmark.protocol import same_dataset
    from anomaly_gym.meta.benchmark.runner import BenchmarkConfig, _prepare, _setup_record

    rng = np.random.default_rng(0)
    for folder, names in (("src", ("bank", "other")), ("tgt", ("campaign",))):
        (tmp_path / folder).mkdir()
        for i, name in enumerate(names):
            np.savez(tmp_path / folder / f"{name}.npz", X=rng.normal(size=(60, 4 + i)), y=np.r_[np.zeros(54), np.ones(6)])
    base = dict(sources=[str(tmp_path / "src")], targets=[str(tmp_path / "tgt")], methods=["iforest"], out=tmp_path / "out")
    for config, joined in ((BenchmarkConfig(**base), True), (BenchmarkConfig(**base, twins={}), False)):
        setup = _prepare(config)
        bank = next(s for s in setup.sources if s.name == "bank")
        assert same_dataset(bank, setup.targets[0]) is joined
        assert ("twins" in _setup_record(config, setup)) is joined
