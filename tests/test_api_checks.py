"""The Python API checks its inputs as the command line does (issue 24): numbers finite and integral where they must
be, labels class indices, models finite; a checkpoint with NaN or huge values is refused when it is loaded."""

from __future__ import annotations

import pytest
import torch

import mu_lightning
from mu_lightning.errors import ConfigError, RunFault
from mu_lightning.weights import load_weights

X, Y = torch.randn(12, 4), torch.arange(12) % 2


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 2))


@pytest.mark.parametrize("options,message", [
    ({"optimizer": {"lr": float("nan")}}, r"^unlearner.optimizer.lr=nan is not a finite number"),
    ({"optimizer": {"lr": -1.0}}, r"^unlearner.optimizer.lr=-1.0 must be > 0"),
    ({"epochs": 1.5}, r"^unlearner.epochs=1.5 is not allowed: unlearner.epochs takes an integer"),
    ({"batch_size": 0}, r"^unlearner.batch_size=0 must be > 0"),
])
def test_the_api_applies_the_numeric_checks_of_the_command_line(options, message):
    with pytest.raises(ConfigError, match=message):
        mu_lightning.unlearn(net(), forget=(X[:4], Y[:4]), retain=(X[4:], Y[4:]), method="finetune", **options)


def test_fractional_or_negative_labels_and_non_finite_inputs_are_refused():
    with pytest.raises(ConfigError, match=r"^forget's labels must be class indices .* such as 0.5"):
        mu_lightning.unlearn(net(), forget=(X[:4], torch.tensor([0, 0.5, 1, 1])), retain=(X[4:], Y[4:]))
    with pytest.raises(ConfigError, match=r"^retain's labels must be class indices .* such as -1"):
        mu_lightning.unlearn(net(), forget=(X[:4], Y[:4]), retain=(X[4:], -Y[4:] - 1))
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ConfigError, match=r"^forget's inputs hold NaN or infinite values"):
        mu_lightning.unlearn(net(), forget=(bad[:4], Y[:4]), retain=(X[4:], Y[4:]))


def test_a_nan_model_is_refused_and_a_diverged_one_is_never_returned_as_sound():
    model = net()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match=r"^model: weights hold NaN or infinite values"):
        mu_lightning.unlearn(model, forget=(X[:4], Y[:4]), retain=(X[4:], Y[4:]))
    try:
        unlearned, facts = mu_lightning.unlearn(net(), forget=(X[:4], Y[:4]), retain=(X[4:], Y[4:]),
                                                method="gradient_ascent", optimizer={"lr": 1e30})
    except RunFault as err:
        assert "NaN or infinite weights" in str(err)
    else:
        finite = all(torch.isfinite(v).all() for v in unlearned.state_dict().values())
        assert finite, facts  # the guard rolled back to the last finite weights


@pytest.mark.parametrize("value,fragment", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
                                            (1e35, r"above 1e\+30")])
def test_a_checkpoint_with_non_finite_or_huge_values_is_refused_when_loaded(tmp_path, value, fragment):
    state = net().state_dict()
    state["0.weight"][0, 0] = value
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(ConfigError, match=rf"^unlearned.checkpoint={tmp_path / 'm.pt'} is not a usable model: "
                                          rf"weights hold .*{fragment}"):
        load_weights(net(), tmp_path / "m.pt", "unlearned.checkpoint")
    state["0.weight"][0, 0] = 1.0
    torch.save(state, tmp_path / "m.pt")
    assert len(load_weights(net(), tmp_path / "m.pt", "unlearned.checkpoint")) == 64
