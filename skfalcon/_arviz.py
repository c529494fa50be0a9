"""Export posterior samples to ArviZ, for its summaries and plots.

Needs ArviZ, an optional extra: ``pip install "skfalcon[arviz]"``. ArviZ 0.x builds an
``InferenceData`` and ArviZ 1.x a ``DataTree`` from the same dictionaries; which API is
present is detected from the signature of ``arviz.from_dict``.
"""

from __future__ import annotations

import inspect

import numpy as np

from skfalcon.diagnostics import _estimator_names
from skfalcon.utils.validation import check_positive_int

__all__ = ["to_inference_data"]


def _arviz():
    """The arviz module, or an ImportError that says how to install it."""
    try:
        import arviz
    except ImportError as exc:
        raise ImportError(
            'to_inference_data needs ArviZ; install it with pip install "skfalcon[arviz]".'
        ) from exc
    return arviz


def to_inference_data(estimator, x, n_samples, *, n_chains: int = 1, random_state=None):
    """Posterior samples of one observation as an ArviZ object.

    Draws ``n_chains * n_samples`` samples from ``estimator.sample(x, ...)`` and stores
    them in the ``posterior`` group, one variable per parameter of shape ``(n_chains,
    n_samples)``, and ``x`` in the ``observed_data`` group. The samples are independent
    draws, not a Markov chain: ArviZ's R-hat is near 1 and its effective sample size near
    ``n_chains * n_samples`` by construction, and several chains only split the draws.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``sample(x, n_samples, random_state=...)`` returning ``(n_samples,
        n_parameters)`` for one observation, as :class:`~skfalcon.FlowPosteriorEstimator`.
    x : array-like of shape (n_features,)
        The observation.
    n_samples : int
        Draws per chain.
    n_chains : int, default=1
        Number of chains the draws are split into.
    random_state : int, RandomState instance or None, default=None
        Passed to ``estimator.sample`` (where ``None`` falls back to the estimator's own
        ``random_state``).

    Returns
    -------
    data : arviz.InferenceData or xarray.DataTree
        ``InferenceData`` with ArviZ 0.x, ``DataTree`` with ArviZ 1.x. The variables are
        named after the columns of the DataFrame the estimator was fitted on
        (``feature_names_in_``, only the inferred parameters where some are
        marginalized), else ``theta0, theta1, ...``.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon import to_inference_data
    >>> class Gaussian:  # any object with sample() will do
    ...     def sample(self, x, n_samples, random_state=None):
    ...         return np.random.default_rng(random_state).normal(size=(n_samples, 2))
    >>> idata = to_inference_data(Gaussian(), np.zeros(3), 500, n_chains=2)  # doctest: +SKIP
    >>> idata.posterior["theta0"].shape  # doctest: +SKIP
    (2, 500)
    """
    arviz = _arviz()
    if not callable(getattr(estimator, "sample", None)):
        raise TypeError(
            "estimator must have a sample method (a fitted FlowPosteriorEstimator, for "
            f"instance); got {type(estimator).__name__}."
        )
    n_samples = check_positive_int(n_samples, "n_samples")
    n_chains = check_positive_int(n_chains, "n_chains")
    observation = np.asarray(x, dtype=np.float64)
    if observation.ndim != 1:
        raise ValueError(
            f"x must be one observation of shape (n_features,); got shape {observation.shape}."
        )
    samples = np.asarray(estimator.sample(x, n_chains * n_samples, random_state=random_state))
    if samples.ndim != 2 or samples.shape[0] != n_chains * n_samples:
        raise ValueError(
            f"estimator.sample(x, {n_chains * n_samples}) returned shape {samples.shape}; "
            f"expected ({n_chains * n_samples}, n_parameters)."
        )
    d = samples.shape[1]
    names = _estimator_names(estimator, None, d) or [f"theta{i}" for i in range(d)]
    draws = samples.astype(np.float64).reshape(n_chains, n_samples, -1)
    posterior = {name: draws[:, :, j] for j, name in enumerate(names)}
    observed = {"x": observation}
    if "posterior" in inspect.signature(arviz.from_dict).parameters:  # ArviZ 0.x
        return arviz.from_dict(posterior=posterior, observed_data=observed)
    return arviz.from_dict({"posterior": posterior, "observed_data": observed})
