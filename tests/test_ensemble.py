"""The ensemble engine (mu_lightning/stages/ensemble.py) and the run's ensembles (mu_lightning/ensembles.py): members
trained together equal stages trained alone, land under their keys, count their FLOPs; what cannot be vectorised
trains one at a time with the same results."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict

from mu_lightning.data.batches import TensorBatches
from mu_lightning.data.shadows import halves, shadow_forget, view
from mu_lightning.data.sources import digits
from mu_lightning.models import CNN, MLP
from mu_lightning.stages.ensemble import Member, margins, not_vectorisable, train_together
from tests.helpers import compose_cfg

SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)


def mlp(seed: int) -> MLP:
    L.seed_everything(seed, verbose=False)
    return MLP([1, 8, 8], 10)


def test_first_step_equals_a_member_alone():
    d = digits()
    x, y = d.x[:64], d.y[:64]  # one batch of 64: one epoch is one step
    done = train_together([Member(mlp(s), x, y, s) for s in (3, 4, 5)], 1, 64, SGD)
    for s, trained in zip((3, 4, 5), done, strict=True):
        alone = mlp(s)
        opt = SGD(alone.parameters())
        xb, yb = next(iter(TensorBatches(x, y, 64, shuffle=True, seed=s)))
        F.cross_entropy(alone(xb), yb).backward()
        opt.step()
        for name, t in alone.state_dict().items():
            torch.testing.assert_close(trained.state[name], t, rtol=1e-5, atol=1e-6)
        assert not torch.equal(trained.state["1.weight"], mlp(s).state_dict()["1.weight"])  # it did step


def test_gradient_clipping_is_per_member():
    d = digits()
    x, y = d.x[:64], d.y[:64]
    clipped = train_together([Member(mlp(s), x, y, s) for s in (0, 1)], 1, 64, SGD, grad_clip=0.01)
    for s, trained in zip((0, 1), clipped, strict=True):
        alone = mlp(s)
        opt = SGD(alone.parameters())
        xb, yb = next(iter(TensorBatches(x, y, 64, shuffle=True, seed=s)))
        F.cross_entropy(alone(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(alone.parameters(), 0.01)
        opt.step()
        for name, t in alone.state_dict().items():
            torch.testing.assert_close(trained.state[name], t, rtol=1e-5, atol=1e-6)


def test_what_cannot_be_vectorised_says_why():
    assert not_vectorisable(mlp(0), SGD) is None
    assert not_vectorisable(CNN([1, 8, 8], 10), SGD) is None  # its batch norms batched by channel (stacked_cnn)
    assert "BatchNorm1d" in not_vectorisable(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))
    assert "Dropout" in not_vectorisable(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)))
    assert "LBFGS" in not_vectorisable(mlp(0), functools.partial(torch.optim.LBFGS, lr=1))
    with pytest.raises(ValueError, match="different sizes"):
        train_together([Member(mlp(0), digits().x[:64], digits().y[:64], 0),
                        Member(mlp(1), digits().x[:32], digits().y[:32], 1)], 1, 64, SGD)


def test_margins_are_phi():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    m = margins([model], z, torch.tensor([0, 1]))[0]
    expected = [2.0 - torch.tensor([0.0, -1.0]).logsumexp(0).item(), 0.5 - torch.tensor([0.5, 3.0]).logsumexp(0).item()]
    torch.testing.assert_close(m, torch.tensor(expected, dtype=torch.float64))


def test_shadow_halves_and_forget_requests():
    train = torch.arange(100, 200)
    masks = halves(train, 6, seed=0)
    assert masks.shape == (6, 100) and (masks.sum(1) == 50).all()
    assert not torch.equal(masks[0], masks[1]) and torch.equal(masks, halves(train, 6, seed=0))
    target = torch.arange(100, 120)
    f = shadow_forget(train, masks[0], target, 20, seed=1)
    mine = train[masks[0]]
    assert len(f) == 20 and torch.isin(f, mine).all()
    assert torch.equal(f[torch.isin(f, target)], mine[torch.isin(mine, target)])  # every target sample it holds


@pytest.fixture
def run_parts(tmp_path):
    """The composed config, its data, cache and ensembles for the small synthetic setting of the tests."""
    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import _shapes, build_data, quiet_lightning, run_ensembles

    def parts(*overrides: str):
        quiet_lightning()
        cfg = compose_cfg(tmp_path, ["train.epochs=3", *overrides])
        data = build_data(cfg)
        cache = StageCache(cfg.paths.cache_dir, shapes=_shapes(cfg))
        return cfg, data, cache, run_ensembles(cfg, cache)

    return parts


def test_members_trained_together_are_the_stages_alone_under_their_keys(run_parts, tmp_path):
    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import trained_model

    cfg, data, cache, ens = run_parts()
    seeds = [0, 1, 2, 3]
    together = ens.golds(data, seeds)
    assert ens.facts["trained_together"] == 4 and ens.facts["trained_alone"] == 0
    alone_cache = StageCache(tmp_path / "alone")
    x, y = data.tensors("test")
    for seed, member in zip(seeds, together, strict=True):
        hit = trained_model(cfg, data, cache, "gold", seed)  # the key a gold of that seed has: found, not trained
        assert hit.facts["cache_hit"] and hit.facts["ensemble"]["members"] == 4
        alone = trained_model(cfg, data, alone_cache, "gold", seed)
        assert not alone.facts["cache_hit"]
        assert hit.facts["flops"] == alone.facts["flops"] and hit.facts["grad_evals"] == alone.facts["grad_evals"]
        for name, t in alone.model.state_dict().items():
            torch.testing.assert_close(member.state_dict()[name], t, rtol=1e-4, atol=1e-5)
        acc = lambda m: (m(x).argmax(1) == y).float().mean().item()  # noqa: E731
        assert abs(acc(member) - acc(alone.model)) <= 1 / len(y) + 1e-9


def test_cnn_members_with_batch_norm_are_the_stages_alone(run_parts, tmp_path):
    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import trained_model

    cfg, data, cache, ens = run_parts("model=cnn", "model.channels=[8,16]")
    assert ens.problem("gold") is None
    models = ens.golds(data, [0, 1, 2])
    assert ens.facts["trained_together"] == 3
    x, y = data.tensors("test")
    for seed, model in zip((0, 1, 2), models, strict=True):
        alone = trained_model(cfg, data, StageCache(tmp_path / "alone"), "gold", seed)
        for name, t in alone.model.state_dict().items():  # running statistics included; grouped convolutions sum
            # in another order than one member's, so a few weights differ by ~1e-4 after a whole training
            torch.testing.assert_close(model.state_dict()[name], t, rtol=1e-3, atol=2e-4)
        hit = trained_model(cfg, data, cache, "gold", seed)
        assert hit.facts["cache_hit"] and hit.facts["flops"] == alone.facts["flops"]
        with torch.no_grad():
            agree = (model.eval()(x).argmax(1) == alone.model.eval()(x).argmax(1)).float().mean().item()
        assert agree >= 1 - 1 / len(y) - 1e-9


@pytest.mark.slow
def test_batch_norm_elsewhere_falls_back_to_one_at_a_time_with_the_same_results(run_parts, tmp_path):
    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import trained_model

    cfg, data, cache, ens = run_parts("model=resnet18", "model.width=4")
    assert "BatchNorm2d" in ens.problem("gold")
    models = ens.golds(data, [0, 1])
    assert ens.facts["trained_alone"] == 2 and ens.facts["trained_together"] == 0
    for seed, model in zip((0, 1), models, strict=True):
        alone = trained_model(cfg, data, StageCache(tmp_path / "alone"), "gold", seed)
        for name, t in alone.model.state_dict().items():
            assert torch.equal(model.state_dict()[name], t), name


def test_vectorise_false_and_shadow_views(run_parts, tmp_path):
    from mu_lightning.cache import StageCache
    from mu_lightning.pipeline import trained_model

    cfg, data, cache, ens = run_parts("metric=ensemble", "metric.ensemble.vectorise=false")
    assert ens.problem("original") == "metric.ensemble.vectorise=false"
    for seed, model in zip((0, 1), ens.golds(data, [0, 1]), strict=True):  # one at a time: the stage alone, exactly
        alone = trained_model(cfg, data, StageCache(tmp_path / "alone"), "gold", seed)
        assert all(torch.equal(model.state_dict()[k], t) for k, t in alone.model.state_dict().items())
    assert ens.facts["trained_alone"] == 2
    with open_dict(cfg):
        cfg.metric.ensemble.vectorise = True
    masks, models = ens.shadows(data, 4, seed=0, first_seed=0)
    assert len(models) == 4 and ens.facts["trained_together"] == 4
    half = view(data, train=data.ids["train"][masks[0]], forget=data.ids["train"][:0])
    assert len(half.ids["train"]) == len(data.ids["train"]) // 2 and len(half.ids["forget"]) == 0
    assert torch.equal(half.ids["retain"], half.ids["train"])
    again = ens.shadows(data, 4, seed=0, first_seed=0)[1]  # all four now from the cache
    assert ens.facts["loaded"] == 4
    for a, b in zip(models, again, strict=True):
        assert torch.equal(a.state_dict()["1.weight"], b.state_dict()["1.weight"])


@pytest.mark.parametrize(("override", "reason"), [
    ("trainer=ddp_cpu", "not one 32-bit CPU process"),
    ("train.checkpoint_every=2", "resumable"),
])
def test_other_trainers_and_recipes_train_one_at_a_time(run_parts, override, reason):
    cfg, data, cache, ens = run_parts(override)
    assert reason in ens.problem("gold")
