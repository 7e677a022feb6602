import pytest
import torch
from anomaly_gym.meta.reptile import Reptile, reptile_update


def _toy_params(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g), "steps": torch.tensor(7)}


@pytest.mark.parametrize("meta_lr", [0.1, 0.5, 1.0])
def test_reptile_step_moves_exactly_meta_lr_of_the_way(meta_lr):
    meta, adapted = _toy_params(0), _toy_params(1)
    new = reptile_update(meta, adapted, meta_lr)
    for key in ("w", "b"):
        moved = new[key] - meta[key]
        full = adapted[key] - meta[key]
        torch.testing.assert_close(moved, meta_lr * full)
        # distance to the adapted parameters shrinks by exactly (1 - meta_lr)
        assert float(torch.linalg.norm(adapted[key] - new[key])) == pytest.approx((1 - meta_lr) * float(torch.linalg.norm(full)), rel=1e-5, abs=1e-6)
    assert int(new["steps"]) == 7  # integer buffers are not interpolated


def test_reptile_update_rejects_bad_arguments():
    meta = _toy_params(0)
    with pytest.raises(ValueError, match="meta_lr"):
        reptile_update(meta, meta, 0.0)
    with pytest.raises(ValueError, match="different keys"):
        reptile_update(meta, {"w": meta["w"]}, 0.5)


def test_reptile_object_on_a_toy_model_adapts_and_steps():
    """Inner SGD on a quadratic lowers its loss; the outer step lands meta_lr of the way."""

    class Agent:  # the part of an SB3 agent Reptile touches
        def __init__(self):
            self.policy = torch.nn.Linear(2, 1)

        def learn(self, steps, **_):
            opt = torch.optim.SGD(self.policy.parameters(), lr=0.1)
            for _ in range(steps):
                opt.zero_grad()
                loss_fn(self.policy).backward()
                opt.step()

    target = torch.tensor([[1.0, -2.0]])

    def loss_fn(model):
        return ((model.weight - target) ** 2).sum() + (model.bias - 0.5).pow(2).sum()

    torch.manual_seed(0)
    agent = Agent()
    reptile = Reptile(agent, meta_lr=0.25)
    meta = reptile.clone()
    before = loss_fn(agent.policy).item()
    adapted = reptile.adapt(lambda: None, inner_steps=5)
    assert loss_fn(agent.policy).item() < before
    new = reptile.step(meta, adapted)
    torch.testing.assert_close(agent.policy.weight.detach(), meta["weight"] + 0.25 * (adapted["weight"] - meta["weight"]))
    torch.testing.assert_close(new["bias"], agent.policy.bias.detach())
