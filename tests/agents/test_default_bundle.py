"""The shipped default policy: current format, and trained with configs/detect-default.toml."""

import json
import tomllib
import zipfile
from pathlib import Path

import pytest
from anomaly_gym.agents import default_bundle_path, load_default_bundle
from anomaly_gym.envs import FeaturizerConfig

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "detect-default.toml"


@pytest.mark.skipif(not default_bundle_path().is_file(), reason="the default policy bundle is not installed")
def test_default_bundle_is_pickle_free_and_matches_its_config():
    with zipfile.ZipFile(str(default_bundle_path())) as zf:
        assert set(zf.namelist()) == {"bundle.json", "policy.safetensors"}
        header = json.loads(zf.read("bundle.json"))
    assert header["format_version"] == 3
    bundle = load_default_bundle(device="cpu")
    if not CONFIG.is_file():
        pytest.skip("configs/detect-default.toml is not next to the tests")
    config = tomllib.loads(CONFIG.read_text())
    assert bundle.metadata["config"] == config
    assert bundle.featurizer_config == FeaturizerConfig.from_dict(config["featurizer"])
    assert bundle.algo == config["algo"]
