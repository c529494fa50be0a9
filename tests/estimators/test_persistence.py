"""Files of earlier releases, and what a pickle of a fitted estimator holds."""

import ast
import copy
import pathlib
import warnings

import joblib
import numpy as np
import pytest
import torch

import skfalcon
from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import MarginalPolicy, NetworkSpec

DATA = pathlib.Path(__file__).parent.parent / "data"


@pytest.mark.parametrize(
    ("name", "marginal"), [("prior", "prior"), ("none", None), ("mixture", "mixture")]
)
def test_files_of_skfalcon_0_1_load_with_a_warning_and_sample_as_before(name, marginal):
    # Written by skfalcon 0.1.0 (tiny two-moons models); the reference draws come from
    # that release, for the same seeds.
    reference = np.load(DATA / "estimator_0.1.0_reference.npz")
    with pytest.warns(UserWarning, match=r"saved with skfalcon 0\.1\.0 and is loaded with"):
        est = joblib.load(DATA / f"estimator_0.1.0_{name}.joblib")
    assert est.marginal_ == marginal
    assert isinstance(est.network_.spec, NetworkSpec)
    # The removed hyperparameters are gone, the merged one is mapped.
    assert set(est.get_params()) == set(FlowPosteriorEstimator().get_params())
    assert est.discard_log_ratio is None
    # The same draws, to the float32 rounding of the pass-by-pass autoregressive inverse.
    np.testing.assert_allclose(
        est.sample(reference["x0"], 5, random_state=3),
        reference[f"{name}_sample"],
        rtol=1e-6,
        atol=1e-6,
    )
    log_prob = est.log_prob(reference["theta5"], reference["x0"])
    expected = reference[f"{name}_log_prob"]
    # The mixture's log Z(x) is estimated again, now to 0.005 nats; the rest is exact up
    # to float32 rounding (the splines' bins are normalised in another order).
    np.testing.assert_allclose(log_prob - log_prob[0], expected - expected[0], atol=1e-5)
    np.testing.assert_allclose(log_prob, expected, atol=0.1 if name == "mixture" else 1e-5)


@pytest.mark.parametrize("suffix", ["joblib", "skfalcon"])
def test_flow_matching_files_of_skfalcon_0_2_load_with_their_field(suffix):
    # Written by skfalcon 0.2.0, whose flow-matching field was zuko's MLP; the reference
    # draws and densities come from that release, for the same seeds.
    reference = np.load(DATA / "estimator_0.2.0_flow_matching_reference.npz")
    path = DATA / f"estimator_0.2.0_flow_matching.{suffix}"
    with pytest.warns(UserWarning, match=r"saved with skfalcon 0\.2\.0 and is loaded with"):
        est = joblib.load(path) if suffix == "joblib" else skfalcon.load(path)
    assert est.network_.spec.vector_field is None
    assert est.network_.conditional.flow.transform.field == "mlp"
    # Parameters added since keep the behaviour of then: a refit validates the weights.
    assert est.get_params()["ema_epochs"] == 0.0
    # Densities solve the same ODE as then; draws without densities now integrate at the
    # looser sample tolerance, so they agree to it.
    log_prob = est.log_prob(reference["theta5"], reference["x0"])
    np.testing.assert_allclose(log_prob, reference["log_prob"], atol=1e-9)
    draws = est.sample(reference["x0"], 5, random_state=3)
    np.testing.assert_allclose(draws, reference["sample"], atol=2e-3)


def test_a_loaded_old_mixture_model_keeps_training(moons_data):
    task, theta, x = moons_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = joblib.load(DATA / "estimator_0.1.0_mixture.joblib")
        est.partial_fit(theta[:100], x[:100], max_epochs=1)
    assert est.n_stored_simulations_ == 100 and est.marginal_ == "prior"


def test_weights_that_do_not_fit_the_spec_raise_a_clear_error(fitted_moons):
    state = fitted_moons.__getstate__()
    weights = dict(state["_network_state"]["weights"])
    name = next(iter(weights))
    weights[name] = np.zeros((3, 3, 3), dtype=np.float32)
    state["_network_state"] = {**state["_network_state"], "weights": weights}
    with pytest.raises(ValueError, match="saved weights do not fit the saved network spec"):
        FlowPosteriorEstimator.__new__(FlowPosteriorEstimator).__setstate__(state)


def test_the_pickle_holds_the_spec_the_policy_and_numpy_weights(fitted_moons):
    state = fitted_moons.__getstate__()
    saved = state["_network_state"]
    assert saved["spec"] == fitted_moons.network_.spec
    assert saved["marginal_policy"] == MarginalPolicy("prior", 1.0)
    assert all(isinstance(v, np.ndarray) for v in saved["weights"].values())
    assert "network_" not in state and "_store" not in state
    assert state["_skfalcon_version"] == skfalcon.__version__


def test_a_deep_copy_keeps_the_store_and_trains_on_as_the_original(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny).fit(theta, x)
    copied = copy.deepcopy(est)
    assert copied.network_ is not est.network_
    copied.partial_fit(theta[:50], x[:50], max_epochs=1)
    assert copied.n_stored_simulations_ == len(theta) + 50
    assert est.n_stored_simulations_ == len(theta)  # the original is left as it was
    est.partial_fit(theta[:50], x[:50], max_epochs=1)
    np.testing.assert_array_equal(
        est.sample(task.observations(1)[1][0], 5, random_state=0),
        copied.sample(task.observations(1)[1][0], 5, random_state=0),
    )


def _calls(module: pathlib.Path):
    """Attribute names called on anything in ``module``, e.g. ``estimator.fit``."""
    tree = ast.parse(module.read_text())
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }


def test_the_sequential_loop_uses_public_estimator_methods_only():
    package = pathlib.Path(skfalcon.__file__).parent / "sequential"
    for module in package.glob("*.py"):
        calls = _calls(module)
        assert "set_params" not in calls, module.name
        estimator_methods = {n for n in dir(FlowPosteriorEstimator) if n.startswith("_")}
        private = calls & estimator_methods - {"__init__"}
        assert not private, (module.name, private)


_MAIN_EMBEDDING_SCRIPT = """
import sys, warnings
import torch
import skfalcon
from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import TwoMoons

class MyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 3)

    def forward(self, x):
        return self.linear(x)

task = TwoMoons()
theta = task.sample_prior(200, random_state=0)
x = task.simulate(theta, random_state=1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    est = FlowPosteriorEstimator(
        prior=task.prior, embedding=MyNet(), max_epochs=1, num_transforms=1,
        hidden_features=(8,), device="cpu",
    ).fit(theta, x)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    skfalcon.save(est, sys.argv[1])
print("|".join(str(w.message) for w in caught))
"""


def test_an_embedding_defined_in_main_warns_at_save_and_fails_clearly_at_load(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "model.joblib"
    script = tmp_path / "fit.py"
    script.write_text(_MAIN_EMBEDDING_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "MyNet is defined in __main__" in done.stdout
    with pytest.raises(ValueError, match=r"refers to code this process cannot import .*MyNet"):
        skfalcon.load(path)


def test_an_unpicklable_embedding_factory_is_named_at_save(moons_data, tiny, tmp_path):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(
        prior=task.prior, embedding=lambda shape: torch.nn.Flatten(), random_state=0, **tiny
    ).fit(theta, x)
    path = tmp_path / "model.joblib"
    with pytest.raises(ValueError, match=r"pickle cannot store .*lambda"):
        skfalcon.save(est, path)
    assert not path.exists()
