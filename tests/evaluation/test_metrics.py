"""Tests for :mod:`pyro_gem.evaluation.metrics`: the log predictive density against closed forms,
for ``obs=`` and ``pyro.factor`` likelihoods and for Gaussian, delta and particle posteriors; a
user's metric in a few lines; errors that name the metric and the site."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import NOISE, log_marginal, make_model, make_prior, tasks_data
from sinusoid_fixtures import small_sinusoid

from pyro_gem import GEMBML, InnerVI, Metric, ParticlePosterior, Sinusoid, meta_test
from pyro_gem.core.inner import TasksModel
from pyro_gem.evaluation import LogPredictiveDensity, MetricError, Query, SquaredError


class ExactPosterior:
    """The exact Gaussian posterior of conjugate linear-Gaussian tasks (full covariance), with
    the interface a Query reads: the weights' draws, the tasks model, finiteness."""

    def __init__(self, model, site, mean, cov, nesting=1):
        self.tasks_model = TasksModel(model, nesting)
        self.site, self.mean, self.cov = site, mean, cov
        self.num_tasks = mean.shape[0]
        self.finite = torch.ones(self.num_tasks, dtype=torch.bool)

    def weight_draws(self, num_samples, generator=None):
        chol = torch.linalg.cholesky(self.cov)  # (T, D, D)
        eps = torch.randn(
            (num_samples, *self.mean.shape), generator=generator, dtype=self.mean.dtype
        )
        return self.mean + (chol @ eps[..., None])[..., 0]


def _mc_standard_error(loglik):
    """Standard error of log-mean-exp over draws (delta method): sd(w) / (mean(w) √S)."""
    w = (loglik - loglik.max(0).values).exp()
    return w.std(0) / w.mean(0) / loglik.shape[0] ** 0.5


def _conjugate_tasks(num_tasks=3, support=10, query=4, dim=2):
    prior = make_prior(dim)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(num_tasks, support + query, dim, generator=gen, dtype=torch.float64)
    y = tasks_data(prior, x, seed=4)
    return prior, x[:, :support], y[:, :support], x[:, support:], y[:, support:]


def _posterior(prior, x, y):
    """Exact posterior mean (T, D) and covariance (T, D, D) given (x, y)."""
    var = prior.scale.detach() ** 2
    prec = x.transpose(-1, -2) @ x / NOISE**2 + torch.diag(1 / var)
    cov = torch.linalg.inv(prec)
    rhs = (x.transpose(-1, -2) @ y[..., None])[..., 0] / NOISE**2 + prior.loc.detach() / var
    return (cov @ rhs[..., None])[..., 0], cov


def test_lpd_of_the_exact_posterior_is_the_analytic_predictive_density():
    prior, xs, ys, xq, yq = _conjugate_tasks()
    model = make_model(prior)
    mean, cov = _posterior(prior, xs, ys)
    post = ExactPosterior(model, prior.name, mean, cov)
    query = Query(post, (xq, yq), num_samples=40_000, generator=torch.Generator().manual_seed(0))
    lpd = LogPredictiveDensity()(query)
    tolerance = 4 * _mc_standard_error(query.log_likelihood())
    m, s = prior.loc.detach(), prior.log_scale.detach()
    xj, yj = torch.cat([xs, xq], 1), torch.cat([ys, yq], 1)
    for t in range(len(xs)):
        # log P(D_q | D_s) = log P(D_s ∪ D_q) − log P(D_s), both analytic.
        exact = log_marginal(m, s, xj[t : t + 1], yj[t : t + 1]) - log_marginal(
            m, s, xs[t : t + 1], ys[t : t + 1]
        )
        # Its other closed form: N(y_q; X_q μ, X_q Σ X_qᵀ + noise² I).
        predictive = dist.MultivariateNormal(
            xq[t] @ mean[t], xq[t] @ cov[t] @ xq[t].T + NOISE**2 * torch.eye(xq.shape[1])
        )
        assert exact.item() == pytest.approx(predictive.log_prob(yq[t]).item(), abs=1e-9)
        assert tolerance[t] < 0.05  # the draws pin it down
        assert lpd[t].item() == pytest.approx(exact.item(), abs=tolerance[t].item())


def test_lpd_after_converged_inner_vi_is_the_analytic_predictive_density():
    """Orthogonal design (exactly diagonal posterior): mean-field VI run to convergence by the
    learner's own adapt() gives the closed form to optimisation and Monte Carlo tolerance."""
    from linear_gaussian import orthogonal_design

    torch.set_default_dtype(torch.float64)
    prior = make_prior(3)
    xj = orthogonal_design(4, 9, 3, seed=2)  # support: rows 0-5, XᵀX diagonal; query: 6-8
    yj = tasks_data(prior, xj, seed=5)
    x, y, xq, yq = xj[:, :6], yj[:, :6], xj[:, 6:], yj[:, 6:]
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.9985})  # decays to ~1% by the end
    learner = GEMBML(
        make_model(prior), prior, inner=InnerVI(optim=optim, steps=3000, num_particles=32)
    )
    pyro.set_rng_seed(0)
    post = learner.adapt(x, y)
    query = Query(post, (xq, yq), 20_000, torch.Generator().manual_seed(1))
    lpd = LogPredictiveDensity()(query)
    tolerance = 4 * _mc_standard_error(query.log_likelihood()) + 0.05  # + the VI's own error
    mean, cov = _posterior(prior, x, y)
    for t in range(4):
        exact = dist.MultivariateNormal(
            xq[t] @ mean[t], xq[t] @ cov[t] @ xq[t].T + NOISE**2 * torch.eye(3)
        ).log_prob(yq[t])
        assert lpd[t].item() == pytest.approx(exact.item(), abs=tolerance[t].item())


def _obs_and_factor_models():
    model, prior = small_sinusoid()

    def factor_model(x, y):  # the same likelihood, as a factor, labels required
        mean = pyro.deterministic("mean", prior.sample_net()(x).squeeze(-1))
        pyro.factor("loglik", dist.Normal(mean, 0.3).log_prob(y).sum(-1))

    return model, factor_model, prior


def test_a_factor_likelihood_scores_as_the_same_obs_likelihood():
    model, factor_model, prior = _obs_and_factor_models()
    test = Sinusoid().test_tasks(4)
    scores = []
    for m in (model, factor_model):
        learner = GEMBML(m, prior, inner=InnerVI(steps=3))
        pyro.set_rng_seed(0)
        scores.append(meta_test(learner, test, (0, 3), num_samples=20))
    for step in ("0", "3"):
        assert scores[1]["lpd"][step] == pytest.approx(scores[0]["lpd"][step], rel=1e-5)


def test_lpd_of_delta_and_particle_posteriors_is_the_mixture_of_their_points():
    model, prior = small_sinusoid()
    test = Sinusoid().test_tasks(3)
    theta = prior.loc.detach() + 0.1 * torch.randn(4, 3, prior.num_weights)  # (M, T, D)
    loglik = torch.stack(
        [meta_ll for meta_ll in GEMBML(model, prior).log_likelihood(test.query)(theta).unbind(0)]
    )  # (M, T)
    tasks_model = TasksModel(model, 1)
    for particles in (theta[:1], theta):  # a delta posterior (M = 1) and four particles
        post = ParticlePosterior(tasks_model, prior.name, particles.transpose(0, 1), steps=0)
        lpd = LogPredictiveDensity()(Query(post, test.query, num_samples=50))
        expected = torch.logsumexp(loglik[: len(particles)], 0) - math.log(len(particles))
        assert torch.allclose(lpd, expected, atol=1e-5)


def test_a_users_metric_reads_the_models_sites_in_a_few_lines():
    class MeanAbsoluteError(Metric):
        name = "mae"

        def __call__(self, query):
            return (query.sites()["mean"].mean(0) - query.target).abs().mean(-1)

    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=1))
    scores = meta_test(learner, Sinusoid().test_tasks(5), (0, 1), metrics=(MeanAbsoluteError(),))
    for step in ("0", "1"):
        mae, mse = (
            scores["mae"][step][0],
            meta_test(learner, Sinusoid().test_tasks(5), (int(step),), metrics=(SquaredError(),))[
                "mse"
            ][step][0],
        )
        assert 0 < mae and mae**2 <= mse * 1.5  # Jensen, up to the draws


def test_a_metric_that_needs_a_missing_observation_site_names_both():
    _, factor_model, prior = _obs_and_factor_models()
    learner = GEMBML(factor_model, prior, inner=InnerVI(steps=1))
    with pytest.raises(MetricError, match=r"metric 'mse' needs the observation site 'y'.*factor"):
        meta_test(learner, Sinusoid().test_tasks(2), (0,), metrics=Sinusoid().metrics)
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=1))
    with pytest.raises(MetricError, match=r"metric 'mse' needs the observation site 'z'"):
        meta_test(learner, Sinusoid().test_tasks(2), (0,), metrics=(SquaredError(obs_site="z"),))


def test_bad_metric_lists_are_refused():
    model, prior = small_sinusoid()
    learner = GEMBML(model, prior, inner=InnerVI(steps=1))
    test = Sinusoid().test_tasks(2)

    class Steps(Metric):
        name = "steps"

    with pytest.raises(ValueError, match="reserved or used twice"):
        meta_test(learner, test, (0,), metrics=(Steps(),))
    with pytest.raises(ValueError, match="reserved or used twice"):
        meta_test(learner, test, (0,), metrics=(SquaredError(), SquaredError()))
    with pytest.raises(ValueError, match="not a named Metric"):
        meta_test(learner, test, (0,), metrics=(lambda q: q.target,))


def test_draws_evaluated_in_runs_of_a_few_copies_score_as_in_one_run():
    """The memory bound splits the draws into several model runs; the numbers do not change."""
    model, prior = small_sinusoid()
    test = Sinusoid().test_tasks(5)
    post = GEMBML(model, prior, inner=InnerVI(steps=2)).adapt(*test.support)
    whole = Query(post, test.query, 12, torch.Generator().manual_seed(0))
    runs = Query(post, test.query, 12, torch.Generator().manual_seed(0), max_elements=230)
    calls = []
    evaluate = runs._loglik.evaluate
    runs._loglik.evaluate = lambda theta: calls.append(len(theta)) or evaluate(theta)
    assert torch.allclose(whole.log_likelihood(), runs.log_likelihood())
    assert torch.allclose(whole.sites()["mean"], runs.sites()["mean"])
    assert calls == [2] * 6  # 5 tasks of 10 points, x and y: 100 elements a copy, 2 per run
