r"""Reference posteriors without a closed form: MCMC, an importance-sampling check, a cache.

A task whose posterior has no closed form draws its reference by MCMC
(:func:`run_ensemble_mcmc`, the affine-invariant ensemble sampler of ``emcee``) and
validates it against an independent method, importance sampling with the true
likelihood (:func:`importance_resample`): candidates :math:`\theta_j \sim g` are weighted
by :math:`w_j \propto \pi(\theta_j)\, p(x \mid \theta_j) / g(\theta_j)` and resampled.
Its quality is the effective sample size :math:`(\sum_j w_j)^2 / \sum_j w_j^2`. The two
samples are then compared by C2ST.

MCMC draws take seconds to minutes, so they are cached on disk
(:func:`cached_reference`): in ``$SKFALCON_CACHE`` or else
``~/.cache/skfalcon/references``, one ``.npy`` file per task, observation, sample count,
seed and :data:`REFERENCE_VERSION`, written atomically. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.special import logsumexp

__all__: list[str] = []

# Bump when any reference sampler changes, so that stale cache files are never read.
REFERENCE_VERSION = "1"

# Steps per walker discarded before the chain is used, and the number of autocorrelation
# times a chain must span for emcee's estimate of that time to be trusted.
_BURN_IN_STEPS = 1500
_MIN_AUTOCORR_SPANS = 10


def cache_directory() -> Path:
    """Where reference samples are cached: ``$SKFALCON_CACHE`` or the user's cache."""
    return Path(
        os.environ.get("SKFALCON_CACHE") or Path.home() / ".cache" / "skfalcon" / "references"
    )


def _cache_path(task_name: str, x_obs: np.ndarray, n_samples: int, seed: int) -> Path:
    key = hashlib.sha256(
        np.ascontiguousarray(x_obs, dtype=np.float64).tobytes()
        + f"|{task_name}|{n_samples}|{seed}|{REFERENCE_VERSION}".encode()
    ).hexdigest()[:24]
    return cache_directory() / f"{task_name}-n{n_samples}-s{seed}-{key}.npy"


def cached_reference(task_name, x_obs, n_samples, random_state, compute, cache=True):
    """``compute(rng)``'s samples, read from or written to the cache.

    Only an integer ``random_state`` names a reproducible draw, so only those are
    cached; ``None`` or a generator always computes. An unwritable cache warns and
    the samples are returned all the same.
    """
    if (
        not cache
        or isinstance(random_state, bool)
        or not isinstance(random_state, numbers.Integral)
    ):
        from sklearn.utils import check_random_state

        return compute(check_random_state(random_state))
    path = _cache_path(task_name, x_obs, n_samples, int(random_state))
    if path.is_file():
        samples = np.load(path, allow_pickle=False)
        if samples.shape[0] == n_samples:
            return samples
    samples = compute(np.random.RandomState(int(random_state)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write next to the target and rename: a reader never sees a partial file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            np.save(f, samples, allow_pickle=False)
        os.replace(f.name, path)
    except OSError as error:
        warnings.warn(
            f"could not cache reference samples in {path.parent} ({error}); set "
            "SKFALCON_CACHE to a writable directory to keep them.",
            RuntimeWarning,
            stacklevel=3,
        )
    return samples


def _import_emcee():
    try:
        import emcee
    except ImportError as error:
        raise ImportError(
            "this task's reference posterior is drawn by MCMC with emcee, which is not "
            "installed; install it with: pip install 'skfalcon[references]'"
        ) from error
    return emcee


def run_ensemble_mcmc(log_target, initial, n_samples, rng, task_name="task"):
    """Draw ``n_samples`` near-independent samples by affine-invariant ensemble MCMC.

    Parameters
    ----------
    log_target : callable
        Vectorized unnormalized log density, ``(n, d) -> (n,)``, ``-inf`` off support.
    initial : ndarray of shape (n_walkers, d)
        Starting points of the walkers, all of finite density.
    n_samples : int
    rng : numpy.random.RandomState
    task_name : str
        Named in warnings.

    Returns
    -------
    samples : ndarray of shape (n_samples, d)
        The chain after :data:`_BURN_IN_STEPS` steps of burn-in, thinned by the
        largest integrated autocorrelation time (measured on the burn-in), shuffled.
    """
    emcee = _import_emcee()
    n_walkers, n_dims = initial.shape
    sampler = emcee.EnsembleSampler(n_walkers, n_dims, log_target, vectorize=True)
    sampler.random_state = np.random.RandomState(rng.randint(2**31)).get_state()
    state = sampler.run_mcmc(initial, _BURN_IN_STEPS, progress=False)
    # The second half of the burn-in, already mixed, tells how far apart draws must be.
    # (emcee logs its own caution about short chains; the check below replaces it.)
    emcee_log = logging.getLogger("emcee.autocorr")
    level = emcee_log.level
    emcee_log.setLevel(logging.ERROR)
    try:
        tau = sampler.get_autocorr_time(discard=_BURN_IN_STEPS // 2, quiet=True)
    finally:
        emcee_log.setLevel(level)
    tau = float(np.max(tau))
    if not np.isfinite(tau) or _MIN_AUTOCORR_SPANS * tau > _BURN_IN_STEPS // 2:
        warnings.warn(
            f"{task_name} reference MCMC mixes slowly: integrated autocorrelation time "
            f"{tau:.0f} steps against a burn-in of {_BURN_IN_STEPS}; the reference samples "
            "may not represent the posterior.",
            RuntimeWarning,
            stacklevel=3,
        )
        tau = tau if np.isfinite(tau) else _BURN_IN_STEPS / _MIN_AUTOCORR_SPANS
    thin = max(1, math.ceil(tau))
    sampler.reset()
    sampler.run_mcmc(state, math.ceil(n_samples / n_walkers) * thin, thin_by=thin, progress=False)
    acceptance = sampler.acceptance_fraction
    if np.min(acceptance) < 0.05:
        warnings.warn(
            f"{task_name} reference MCMC: a walker accepted only {np.min(acceptance):.1%} "
            "of its moves; the reference samples may not represent the posterior.",
            RuntimeWarning,
            stacklevel=3,
        )
    chain = sampler.get_chain(flat=True)
    return chain[rng.permutation(len(chain))[:n_samples]]


def t_mixture_proposal(means, covariances, weights, df):
    """A mixture of multivariate Student-t distributions, as a list of (weight, dist)."""
    return [
        (float(w), stats.multivariate_t(loc=m, shape=c, df=df))
        for m, c, w in zip(means, covariances, weights, strict=True)
    ]


def importance_resample(log_target, proposal, n_proposals, n_samples, rng):
    """Sampling-importance-resampling from a Student-t mixture proposal.

    Parameters
    ----------
    log_target : callable
        Vectorized unnormalized log density, ``(n, d) -> (n,)``.
    proposal : list of (float, scipy.stats.multivariate_t)
        The mixture components and their weights (summing to one).
    n_proposals, n_samples : int
    rng : numpy.random.RandomState

    Returns
    -------
    samples : ndarray of shape (n_samples, d)
        Drawn with replacement, in proportion to the importance weights.
    ess : float
        Effective sample size of the ``n_proposals`` weighted candidates.
    """
    weights = np.array([w for w, _ in proposal])
    counts = rng.multinomial(n_proposals, weights / weights.sum())
    candidates = np.concatenate(
        [
            np.reshape(dist.rvs(size=k, random_state=rng), (k, -1))
            for k, (_, dist) in zip(counts, proposal, strict=True)
            if k > 0
        ]
    )
    log_g = logsumexp([np.log(w) + dist.logpdf(candidates) for w, dist in proposal], axis=0)
    log_w = log_target(candidates) - log_g
    log_w = np.where(np.isnan(log_w), -np.inf, log_w)
    ess = float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)))
    p = np.exp(log_w - logsumexp(log_w))
    return candidates[rng.choice(len(candidates), size=n_samples, p=p / p.sum())], ess
