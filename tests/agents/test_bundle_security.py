"""Bundles from strangers: nothing in them runs, malformed ones are refused with exit 2."""

import base64
import io
import json
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
from anomaly_gym.agents import BundleError, PolicyBundle, convert_legacy_bundle, load_bundle, make_agent
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.scripts import cli

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")

SMALL = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def task():
    return make_synthetic_task("global", n_rows=200, n_features=4, seed=1)


@pytest.fixture(scope="module")
def model(task):
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL, episode_length=32)
    return make_agent("ppo", env, net_arch=[8], device="cpu", seed=0, n_steps=32, batch_size=32).learn(64)


@pytest.fixture(scope="module")
def members(model, task):
    bundle = PolicyBundle(model, SMALL, {"train_tasks": [task.name]})
    bundle.fit_featurizer(task.X)
    with zipfile.ZipFile(io.BytesIO(bundle.to_bytes())) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.fixture
def csv_file(tmp_path, task):
    path = tmp_path / "rows.csv"
    np.savetxt(path, task.X[:40], delimiter=",", header="a,b,c,d", comments="")
    return path


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _legacy(path, model, *, data_edit=None, featurizer_pkl: bytes | None = None):
    """A format-1 bundle as older releases wrote it: bundle.json + SB3's model.zip (+ featurizer.pkl)."""
    buffer = io.BytesIO()
    model.save(buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as zf:
        inner = {name: zf.read(name) for name in zf.namelist()}
    if data_edit is not None:
        data = json.loads(inner["data"])
        data_edit(data)
        inner["data"] = json.dumps(data).encode()
    model_zip = io.BytesIO()
    with zipfile.ZipFile(model_zip, "w") as zf:
        for name, blob in inner.items():
            zf.writestr(name, blob)
    header = {"format": "anomaly-gym-policy-bundle", "format_version": 1, "algo": "ppo", "featurizer": SMALL.to_dict(), "metadata": {}}
    members = {"bundle.json": json.dumps(header).encode(), "model.zip": model_zip.getvalue()}
    if featurizer_pkl is not None:
        members["featurizer.pkl"] = featurizer_pkl
    return _zip(path, members)


def _serialized(obj) -> dict:
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(obj)).decode()}


CRAFTS = {
    "extra cloudpickled key in model.zip/data": lambda marker: {"data_edit": lambda d: d.__setitem__("extra", _serialized(_Payload(marker)))},
    "replaced serialized key in model.zip/data": lambda marker: {"data_edit": lambda d: d.__setitem__("observation_space", _serialized(_Payload(marker)))},
    "payload in featurizer.pkl": lambda marker: {"featurizer_pkl": pickle.dumps(_Payload(marker))},
}


@pytest.mark.parametrize("craft", sorted(CRAFTS))
def test_crafted_pickled_bundles_are_refused_and_their_payload_never_runs(craft, model, tmp_path, csv_file, capsys):
    marker = tmp_path / "payload-ran"
    path = _legacy(tmp_path / "crafted.zip", model, **CRAFTS[craft](marker))
    with pytest.raises(BundleError, match="bundle convert .* --trust"):
        load_bundle(path, device="cpu")
    assert cli.main(["detect", "--model", str(path), str(csv_file)]) == 2
    err = capsys.readouterr().err
    assert "pickled" in err and "Traceback" not in err
    assert not marker.exists()
    # The payload is real: the explicit, trusted conversion does unpickle it.
    try:
        convert_legacy_bundle(path, tmp_path / "new.zip", trust=True)
    except Exception:  # the payload's return value may then break the model; it ran all the same
        pass
    assert marker.exists()


def test_a_zip_bomb_is_refused_without_being_read(members, tmp_path, csv_file, capsys):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bundle.json", members["bundle.json"])
        with zf.open("policy.safetensors", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(1024):  # 1 GiB of zeros, about 1 MB on disk
                member.write(block)
    assert path.stat().st_size < 2 * 2**20
    tracemalloc.start()
    with pytest.raises(BundleError, match="limit"):
        load_bundle(path, device="cpu")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20
    assert cli.main(["detect", "--model", str(path), str(csv_file)]) == 2
    assert "refusing to read it" in capsys.readouterr().err


def test_a_member_that_compresses_like_a_bomb_is_refused(members, tmp_path):
    bomb = dict(members, **{"featurizer.safetensors": bytes(20 * 2**20)})  # under the size limit, 1000:1
    with pytest.raises(BundleError, match="zip bomb"):
        load_bundle(_zip(tmp_path / "ratio.zip", bomb), device="cpu")


def _header(members) -> dict:
    return json.loads(members["bundle.json"])


def _with_header(members, edit) -> dict:
    header = _header(members)
    edit(header)
    return dict(members, **{"bundle.json": json.dumps(header).encode()})


MALFORMED = {
    "bundle.json is a list": (lambda m: dict(m, **{"bundle.json": b"[1, 2]"}), "JSON object"),
    "bundle.json is not JSON": (lambda m: dict(m, **{"bundle.json": b"{nope"}), "not valid JSON"),
    "no algo": (lambda m: _with_header(m, lambda h: h.pop("algo")), "missing field 'algo'"),
    "wrong algo": (lambda m: _with_header(m, lambda h: h.__setitem__("algo", "sac")), "'algo' has an invalid value"),
    "version as text": (lambda m: _with_header(m, lambda h: h.__setitem__("format_version", "3")), "must be int"),
    "no weights": (lambda m: {k: v for k, v in m.items() if k != "policy.safetensors"}, "no policy.safetensors"),
    "garbage weights": (lambda m: dict(m, **{"policy.safetensors": b"\x00garbage" * 10}), "not a valid safetensors"),
    "garbage policy.pth": (lambda m: dict(m, **{"policy.pth": b"garbage"}), "pickled"),
    "unexpected member": (lambda m: dict(m, **{"evil.py": b"import os"}), "unexpected member"),
    "class outside the allowed list": (
        lambda m: _with_header(m, lambda h: h["policy"]["policy_kwargs"].__setitem__("activation_fn", {"class": "os.system"})),
        "not one a bundle may name",
    ),
    "weights of another shape": (
        lambda m: _with_header(m, lambda h: h["policy"]["policy_kwargs"].__setitem__("net_arch", {"pi": [3], "vf": [3]})),
        "does not fit the policy",
    ),
    "unknown hyperparameter": (lambda m: _with_header(m, lambda h: h["policy"]["hyperparameters"].__setitem__("policy_class", "x")), "unknown hyperparameter"),
    "featurizer rows of the wrong width": (
        lambda m: dict(m, **{"featurizer.json": json.dumps({"n_rows_seen": 200, "n_columns": 7}).encode()}),
        "does not match featurizer.json",
    ),
    "head without its trees": (lambda m: dict(m, **{"head.json": b'{"scale": 1.0, "offset": 0.0, "n_columns": 4}'}), "without its partner"),
    "newer format": (lambda m: _with_header(m, lambda h: h.__setitem__("format_version", 99)), "newer anomaly-gym"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bundles_are_refused_with_a_message(case, members, tmp_path, csv_file, capsys):
    build, message = MALFORMED[case]
    path = _zip(tmp_path / "bad.zip", build(members))
    with pytest.raises(BundleError, match=message):
        load_bundle(path, device="cpu")
    assert cli.main(["detect", "--model", str(path), str(csv_file)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_a_corrupt_member_is_reported_as_damage(members, tmp_path):
    path = tmp_path / "crc.zip"
    with zipfile.ZipFile(path, "w") as zf:  # stored, so one flipped byte reaches the CRC check
        for name, data in members.items():
            zf.writestr(name, data)
    raw = bytearray(path.read_bytes())
    at = bytes(raw).index(members["policy.safetensors"][-64:])
    raw[at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(path, device="cpu")


def test_the_intact_members_load(members, tmp_path, task):
    bundle = load_bundle(_zip(tmp_path / "ok.zip", members), device="cpu")
    assert bundle.featurizer is not None
    assert bundle.score(task.X[:10], refit=False).shape == (10,)


def test_convert_needs_trust_and_keeps_the_scores(model, task, tmp_path, capsys):
    old = _legacy(tmp_path / "old.zip", model)
    with pytest.raises(BundleError, match="older policy bundle"):
        load_bundle(old)
    assert cli.main(["bundle", "convert", str(old), "-o", str(tmp_path / "new.zip")]) == 2
    assert "--trust" in capsys.readouterr().err
    assert not (tmp_path / "new.zip").exists()
    assert cli.main(["bundle", "convert", str(old), "-o", str(tmp_path / "new.zip"), "--trust"]) == 0
    assert "format 3" in capsys.readouterr().out
    converted = load_bundle(tmp_path / "new.zip", device="cpu")
    np.testing.assert_allclose(converted.score(task.X), PolicyBundle(model, SMALL).score(task.X), rtol=1e-6)
    assert converted.metadata["converted_from_format"] == 1
    assert cli.main(["bundle", "inspect", str(tmp_path / "new.zip"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["algo"] == "ppo"
