import arviz as az
import matplotlib
import numpy as np
import pyro
import torch
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Sinusoid
from pyro_gem.diagnostics import plot_tasks, plot_training, to_inference_data
from pyro_gem.methods.bmaml import BMAML

matplotlib.use("Agg")


def adapted(num_tasks=3):
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=3))
    test = Sinusoid().test_tasks(num_tasks)
    return learner, test, learner.adapt(*test.support)


def test_inference_data_groups_dims_and_arviz_functions():
    learner, test, post = adapted()
    idata = to_inference_data(post, test.query[:-1], observed=test.query[-1], num_samples=20)
    for group in (
        "posterior",
        "prior",
        "posterior_predictive",
        "prior_predictive",
        "observed_data",
        "log_likelihood",
    ):
        assert group in idata.groups(), group
    d = learner.prior.num_weights
    assert idata.posterior["theta"].dims == ("chain", "draw", "task", "weight")
    assert idata.posterior["theta"].shape == (1, 20, 3, d)
    assert idata.posterior["mean"].dims == ("chain", "draw", "task", "point")
    assert idata.posterior_predictive["y"].shape == (1, 20, 3, 10)
    np.testing.assert_allclose(idata.observed_data["y"].values, test.query[-1].numpy())
    # The log-likelihood is log N(y_obs | mean_s, noise) for each draw.
    mean = torch.as_tensor(idata.posterior["mean"].values)
    expected = torch.distributions.Normal(mean, 0.3).log_prob(test.query[-1])
    np.testing.assert_allclose(
        idata.log_likelihood["y"].values, expected.numpy(), rtol=1e-4, atol=1e-4
    )
    # Posterior draws of the weights follow the adapted guide.
    draws = torch.as_tensor(idata.posterior["theta"].values[0])
    assert torch.allclose(draws.mean(0), post.loc, atol=5 * post.scale.max().item())

    summary = az.summary(idata, var_names=["mean"], coords={"task": [0]})
    assert len(summary) == 10
    az.plot_forest(idata, var_names=["mean"], coords={"task": [0]})
    az.plot_ppc(idata, num_pp_samples=5)
    assert len(pyro.get_param_store().keys()) == 0


def test_inference_data_without_observations_or_weights():
    _, test, post = adapted(2)
    idata = to_inference_data(post, test.query[:-1], num_samples=5, weights=False)
    assert "theta" not in idata.posterior and "observed_data" not in idata.groups()


def test_plots(tmp_path):
    learner, test, _ = adapted(2)
    path = plot_tasks(learner, Sinusoid(), test, tmp_path / "tasks.png", steps=2, num_samples=10)
    assert path.stat().st_size > 1000
    history = [
        {"iteration": i, "meta_objective": -i, "prior_scale_median": 0.01, "heldout_mse": 1.0 / i}
        for i in range(1, 5)
    ]
    assert plot_training(history, tmp_path / "training.png").stat().st_size > 1000


def test_particle_posterior_exports_to_arviz():
    """BMAML's particle posterior goes through the same export as an autoguide posterior."""
    model, prior = small_sinusoid()
    learner = BMAML(model, prior, num_particles=4)
    tasks = Sinusoid().test_tasks(3)
    post = learner.adapt(*tasks.support)
    idata = to_inference_data(post, (tasks.query[0],), observed=tasks.query[1], num_samples=8)
    assert {"posterior", "prior", "posterior_predictive", "log_likelihood"} <= set(idata.groups())
    assert idata.posterior["mean"].shape[-2:] == (3, tasks.query[0].shape[1])
