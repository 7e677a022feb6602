"""``--set KEY=VALUE``: values typed by the config's declared field types; clear errors."""

import pytest
from anomaly_gym.meta.config import TrainConfig, parse_override


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("monotone=false", ("monotone", False)),
        ("monotone=False", ("monotone", False)),
        ("monotone=YES", ("monotone", True)),
        ("net_arch=16,16", ("net_arch", [16, 16])),
        ("net_arch=[32]", ("net_arch", [32])),
        ("net_arch=", ("net_arch", [])),
        ("total_steps=1e5", ("total_steps", 100_000)),
        ("learning_rate=3e-4", ("learning_rate", 3e-4)),
        ("gamma=0", ("gamma", 0.0)),
        ("datasets=wine,glass", ("datasets", ["wine", "glass"])),
        ('datasets=["wine", "glass"]', ("datasets", ["wine", "glass"])),
        ("val_tasks=2", ("val_tasks", 2)),
        ("val_tasks=0.25", ("val_tasks", 0.25)),
        ("val_tasks=wine,glass", ("val_tasks", ["wine", "glass"])),
        ("name=my-run", ("name", "my-run")),
        ("featurizer.detectors=iforest,ecod", ("featurizer.detectors", ("iforest", "ecod"))),
        ("featurizer.detectors=['knn:n_neighbors=20,method=mean']", ("featurizer.detectors", ("knn:n_neighbors=20,method=mean",))),
        ("featurizer.descriptors=off", ("featurizer.descriptors", False)),
        ("featurizer.max_fit_rows=2000", ("featurizer.max_fit_rows", 2000)),
    ],
)
def test_values_take_the_fields_type(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


def test_a_typed_override_reaches_the_config():
    key, value = parse_override("monotone=false")
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), key: value, "net_arch": [8]})
    assert cfg.monotone is False
    assert "monotone = false" in cfg.to_toml()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("monotone=maybe", "expected true or false. monotone: Keep the linear policy"),
        ("n_envs=2.5", "expected a whole number. n_envs: Parallel environments"),
        ("learning_rate=fast", "expected a number"),
        ("net_arch=16,x", "expected a whole number"),
        ("totl_steps=5", "unknown config key. Did you mean 'total_steps'"),
        ("featurizer.detectorz=x", "unknown config key. Did you mean 'detectors'"),
        ("no-equals-sign", "expects KEY=VALUE"),
    ],
)
def test_bad_overrides_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_override(text)
    assert str(info.value).count(message.split(".")[0]) == 1  # said once, not repeated
