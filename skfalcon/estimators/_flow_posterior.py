"""FlowPosteriorEstimator: the scikit-learn façade of the dual-flow posterior."""

import copy
import logging
import time
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from skfalcon._version import __version__
from skfalcon.engine import (
    DualFlowPosterior,
    RunningNorm,
    TrainingDivergedError,
    build_embedding,
    importance_sample,
    train,
)
from skfalcon.engine.importance import draw_candidates, log_normalizer
from skfalcon.engine.store import SampleStore, log_ratio_to_proposal
from skfalcon.estimators._observations import (
    embedding_spec,
    flatten_observations,
    flatten_training_observations,
    observation_shape_of,
)
from skfalcon.estimators._params import FlowPosteriorParams, validate_params
from skfalcon.priors import make_prior
from skfalcon.utils import draw_seed, resolve_device, torch_seed_scope
from skfalcon.utils.validation import (
    MAX_ABS_VALUE,
    check_magnitude,
    exceeds_magnitude,
    named_errors,
    to_float_array,
)

__all__ = ["FlowPosteriorEstimator"]

logger = logging.getLogger("skfalcon")

# Up to this many pools of num_proposals candidates per sample are drawn while the
# effective sample size is below _ESS_PER_SAMPLE times the number of samples requested.
_MAX_POOL_ROUNDS = 8
# At an ESS of n, systematic resampling of n samples still repeats a candidate wherever
# its weight exceeds 1/n: after sequential rounds on 10-D Gaussian linear (seed 0), 11 % of
# 10,000 samples were repeats (C2ST 0.624); with the pool grown to an ESS of 4n, 1.3 %
# (C2ST 0.578).
_ESS_PER_SAMPLE = 4
# Candidates per observation for the normalizing constant Z(x) of log_prob: with a pool
# efficiency near 1/2 the standard error of log Z is about 0.03, and score() stays cheap.
_LOG_Z_CANDIDATES = 2048
# Rows per forward pass at inference (candidates, exact draws, log_prob pairs), which
# bounds memory. On the CPU, activations of 2**14 rows x 128 hidden units (8 MiB of
# float32) are reused by the allocator, while larger ones are mapped afresh and page-fault
# on every operation: 2**16 to 2**18 rows sampled 1.3-2.3x slower (benchmarks/README.md,
# "Speed"). A GPU wants large batches.
_INFERENCE_ROWS = {"cpu": 2**14, "cuda": 2**18}


def _inference_rows(device: torch.device) -> int:
    return _INFERENCE_ROWS.get(device.type, _INFERENCE_ROWS["cpu"])


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


class FlowPosteriorEstimator(BaseEstimator):
    r"""Posterior estimation with a conditional and a marginal normalizing flow.

    Learns :math:`p(\theta \mid x)` from simulations :math:`(\theta, x)`. Parameters are
    mapped from the prior to the cube :math:`[-b, b]^d`; a conditional flow
    :math:`q(u \mid x)` and a marginal flow :math:`m(u)` are fitted jointly and the posterior
    is :math:`p(u \mid x) \propto q(u \mid x) / m(u)` on the cube, which holds whatever
    distribution the training parameters came from. Samples are drawn by importance
    sampling from the mixture :math:`\beta q + (1 - \beta) m`.

    Following scikit-learn, ``fit(X, y)`` takes the parameters ``theta`` as ``X`` and the
    simulated observations ``x`` as ``y``: write ``est.fit(theta, x)``.

    Parameters
    ----------
    prior : list of tuple or FactorizedPrior, default=None
        The prior the training ``theta`` were drawn from, one spec per parameter, e.g.
        ``[("uniform", -1, 1), ("normal", 0, 1)]`` (see :mod:`skfalcon.priors`). ``None``
        means unknown: ``theta`` is standardized from the training rows and the posterior is
        the conditional flow alone (plain neural posterior estimation).
    marginalize : list of int, default=None
        Indices of nuisance parameters that are simulated but not inferred.
    hypercube_bound : float, default=2.0
        Half-width :math:`b` of the cube the prior is mapped to.
    net_type : str, default="nsf"
        zuko flow family of both flows: ``"nsf"``, ``"nsf_coupling"``, ``"maf"``,
        ``"nice"``, ``"realnvp"``, ``"naf"``, ``"unaf"``, ``"ncsf"``, ``"sospf"``, ``"bpf"``
        or ``"gf"``. ``"nsf"`` is autoregressive: evaluating densities takes one pass per
        transform, but drawing samples one pass per parameter per transform.
        ``"nsf_coupling"`` (the same splines in coupling layers, two passes per transform)
        samples many-parameter posteriors several times faster, and may need more
        transforms for the same accuracy.
    num_transforms : int, default=3
        Number of flow transforms.
    hidden_features : tuple of int, default=(64, 64)
        Hidden layer widths of each transform's network. Chosen by measurement: with
        5 transforms of (128, 128) the 10-D Gaussian linear task overfitted 10,000
        simulations from the second epoch on (C2ST 0.597); 3 of (64, 64) reach 0.539
        (sbi 0.534 on the same run) with two moons at 0.557 (was 0.556; sbi 0.577).
    num_bins : int, default=16
        Spline bins (``nsf`` and ``ncsf`` only).
    embedding : None, str, nn.Module, callable or dict, default=None
        Summary network of ``x``, trained jointly with the flows (see
        :doc:`/user_guide/embeddings`). ``None``: the flattened ``x``, normalised online by
        running statistics of the training rows. ``"linear"`` (a learned linear summary,
        weights starting at zero), ``"mlp"``, ``"cnn1d"`` (series of shape
        ``(length,)`` or ``(channels, length)``) or ``"deepset"`` (i.i.d. trials of shape
        ``(n_trials,)`` or ``(n_trials, d)``): presets sized by the ``embedding_*``
        parameters, normalising their input online. A ``torch.nn.Module`` gets observations
        of their own shape ``(n, *shape)`` (or a dict of such tensors) and returns
        ``(n, n_summaries)``; ``fit`` trains a deep copy of it. A callable is called as
        ``factory(observation_shape)`` and returns such a module. For dict observations, a
        dict ``{name: embedding}`` embeds each input on its own and concatenates the
        summaries (inputs it leaves out are normalised and passed on as they are).
    embedding_features : int, default=32
        Summary size of each preset.
    embedding_hidden_features : tuple of int, default=(128, 128)
        Hidden widths of the presets' perceptrons (for ``"deepset"``, of :math:`\phi`).
    embedding_channels : tuple of int, default=(16, 32)
        Channels of the convolution blocks of ``"cnn1d"``.
    embedding_kernel_size : int, default=5
        Kernel width of the convolutions of ``"cnn1d"``.
    theta_norm : bool, default=True
        Put an online running normalisation of :math:`u` in front of each flow.
    norm_momentum : float, default=0.01
        Momentum of the running normalisations.
    adaptive_momentum : bool, default=False
        Use momentum :math:`\max(\alpha, 1/t)` at update :math:`t`.
    use_log_update : bool, default=False
        Average the running variances in log space.
    lr : float, default=2e-3
        AdamW learning rate.
    betas : tuple of float, default=(0.9, 0.999)
        AdamW moment coefficients.
    weight_decay : float, default=0.0
        AdamW decoupled weight decay.
    lr_decay_factor : float, default=0.5
        Factor of the learning rate when the validation loss plateaus.
    lr_patience : int, default=5
        Epochs without improvement before the learning rate decays.
    early_stop_patience : int, default=10
        Epochs without improvement before training stops.
    validation_fraction : float, default=0.1
        Fraction of simulations held out for early stopping and model selection.
    use_best_models : bool, default=True
        Use the weights of the best validation epoch for inference.
    max_epochs : int, default=200
        Maximum number of epochs.
    batch_size : int, default=512
        Minibatch size.
    num_proposals : int, default=4
        Importance-sampling candidates per output sample. The pool's efficiency is close to
        ``proposal_mixture_beta`` for a well-trained model, so a few suffice (C2ST on two
        moons was the same for 2, 4 and 8). While the pool's effective sample size is below
        four times the number of samples requested, further pools of this size are drawn,
        up to 8, so that few samples repeat.
    proposal_mixture_beta : float, default=0.5
        Weight :math:`\beta` of the conditional flow in the candidate mixture.
    out_of_bounds_penalty : float, default=100.0
        Log-weight subtracted from candidates outside the cube.
    nan_replacement : float, default=-100.0
        Log-weight given to candidates whose weight is NaN or :math:`-\infty`.
    gamma : float, default=0.5
        Widening of :meth:`sample_proposal`: 0 is the posterior, 1 the prior.
    marginal : {"auto", "flow"}, default="auto"
        What serves as :math:`m(u)`, the density of the training parameters. ``"auto"``
        uses what is known exactly: while every row of the sample store was drawn from
        the prior, :math:`m` is the prior itself (uniform on the cube), and sampling is
        exact (draws from the conditional flow, no importance weights). Once rows from a
        proposal arrive (``partial_fit`` with ``theta_log_prob``), :math:`m` is the
        mixture :math:`\alpha \pi + (1 - \alpha) h` with :math:`\alpha` the prior rows'
        share and :math:`h` the marginal flow, trained on the proposal rows only (and not
        before they arrive).
        ``"flow"`` always trains and uses the flow on all rows, as Falcon does (also what
        ``"auto"`` falls back to once ``discard_samples`` has dropped prior rows).
    store_capacity : int, default=None
        Most rows kept in the sample store across ``partial_fit`` calls, the oldest dropped
        first (training and validation rows each keep their share). ``None`` keeps all.
    discard_samples : bool, default=False
        Before each ``partial_fit`` round, drop stored rows whose log-ratio
        :math:`\log q(u_i \mid x_i) - \log g_i(u_i)` against the proposal :math:`g_i`
        they were drawn from is below ``log_ratio_threshold``.
    log_ratio_threshold : float, default=-20.0
        Threshold of ``discard_samples``.
    reset_network_after_pause : bool, default=False
        Re-initialise the networks at each ``partial_fit`` instead of continuing from the
        current weights.
    nan_policy : {"drop", "raise"}, default="drop"
        What to do with simulations whose ``x`` holds NaN or infinity: drop them with a
        warning (counted in ``n_dropped_simulations_``) or raise. Non-finite ``theta``
        always raises.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    cache_on_device : bool, default=True
        Move the training tensors to the device once rather than per minibatch.
    max_cache_samples : int, default=None
        Use at most this many training rows per epoch (a fresh random subset each epoch).
    warm_start : bool, default=False
        Continue from the current networks on ``fit`` instead of starting over.
    random_state : int, RandomState instance or None, default=None
        Seeds training and, unless ``sample`` is given its own, sampling. Torch's global
        random state is left untouched.
    verbose : int, default=0
        Show a progress bar with the losses while training.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of ``theta`` seen in ``fit``.
    n_observation_features_ : int
        Number of features of ``x``, flattened (for dict observations, of all inputs).
    observation_shape_ : tuple of int or dict of str to tuple of int
        Shape of one observation (``(n_features,)`` for 2-D ``x``), or of each named input.
    n_parameters_ : int
        Number of columns returned by :meth:`sample` (parameters not marginalized).
    marginal_ : {"prior", "mixture", "flow"} or None
        The density in use as :math:`m` (see ``marginal``); ``None`` without a prior.
    prior_fraction_ : float or None
        :math:`\alpha`, the share of training rows drawn from the prior, when
        ``marginal_`` is ``"prior"`` (1.0) or ``"mixture"``.
    prior_ : FactorizedPrior or None
        The resolved prior.
    device_ : torch.device
        The device the networks live on.
    network_ : DualFlowPosterior
        The trained flows and embedding (torch module).
    history_ : list of dict
        One record per epoch: ``train_loss``, ``val_loss`` (and their conditional and
        marginal parts), ``best_val_loss``, ``lr``, ``seconds``.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        Epoch whose weights are in use when ``use_best_models``.
    n_dropped_simulations_ : int
        Simulations dropped by ``nan_policy="drop"`` in the last fit.
    n_skipped_steps_ : int
        Training steps skipped in the last fit because their loss was not finite.

    See Also
    --------
    skfalcon.datasets.make_two_moons : A benchmark simulator to try it on.

    Examples
    --------
    >>> from skfalcon import FlowPosteriorEstimator
    >>> from skfalcon.datasets import TwoMoons
    >>> task = TwoMoons()
    >>> theta = task.sample_prior(500, random_state=0)
    >>> x = task.simulate(theta, random_state=1)
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=2, random_state=0)
    >>> est.fit(theta, x).sample(x[0], 100).shape
    (100, 2)
    """

    def __init__(
        self,
        prior=None,
        *,
        marginalize=None,
        hypercube_bound=2.0,
        net_type="nsf",
        num_transforms=3,
        hidden_features=(64, 64),
        num_bins=16,
        embedding=None,
        embedding_features=32,
        embedding_hidden_features=(128, 128),
        embedding_channels=(16, 32),
        embedding_kernel_size=5,
        theta_norm=True,
        norm_momentum=0.01,
        adaptive_momentum=False,
        use_log_update=False,
        lr=2e-3,
        betas=(0.9, 0.999),
        weight_decay=0.0,
        lr_decay_factor=0.5,
        lr_patience=5,
        early_stop_patience=10,
        validation_fraction=0.1,
        use_best_models=True,
        max_epochs=200,
        batch_size=512,
        num_proposals=4,
        proposal_mixture_beta=0.5,
        out_of_bounds_penalty=100.0,
        nan_replacement=-100.0,
        gamma=0.5,
        marginal="auto",
        store_capacity=None,
        discard_samples=False,
        log_ratio_threshold=-20.0,
        reset_network_after_pause=False,
        nan_policy="drop",
        device="auto",
        cache_on_device=True,
        max_cache_samples=None,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.prior = prior
        self.marginalize = marginalize
        self.hypercube_bound = hypercube_bound
        self.net_type = net_type
        self.num_transforms = num_transforms
        self.hidden_features = hidden_features
        self.num_bins = num_bins
        self.embedding = embedding
        self.embedding_features = embedding_features
        self.embedding_hidden_features = embedding_hidden_features
        self.embedding_channels = embedding_channels
        self.embedding_kernel_size = embedding_kernel_size
        self.theta_norm = theta_norm
        self.norm_momentum = norm_momentum
        self.adaptive_momentum = adaptive_momentum
        self.use_log_update = use_log_update
        self.lr = lr
        self.betas = betas
        self.weight_decay = weight_decay
        self.lr_decay_factor = lr_decay_factor
        self.lr_patience = lr_patience
        self.early_stop_patience = early_stop_patience
        self.validation_fraction = validation_fraction
        self.use_best_models = use_best_models
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.num_proposals = num_proposals
        self.proposal_mixture_beta = proposal_mixture_beta
        self.out_of_bounds_penalty = out_of_bounds_penalty
        self.nan_replacement = nan_replacement
        self.gamma = gamma
        self.marginal = marginal
        self.store_capacity = store_capacity
        self.discard_samples = discard_samples
        self.log_ratio_threshold = log_ratio_threshold
        self.reset_network_after_pause = reset_network_after_pause
        self.nan_policy = nan_policy
        self.device = device
        self.cache_on_device = cache_on_device
        self.max_cache_samples = max_cache_samples
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ scikit-learn glue

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        tags.input_tags.allow_nan = False
        return tags

    def _validated_params(self) -> FlowPosteriorParams:
        return validate_params(self.get_params(deep=False), type(self).__name__)

    def __getstate__(self):
        # Constructor spec and numpy weights instead of live torch storages, so a model
        # fitted on a GPU loads on a CPU-only machine.
        state = dict(super().__getstate__())  # a copy: the base may hand back __dict__ itself
        state["_skfalcon_version"] = __version__
        # The store is training data, possibly large; a loaded model starts a new one.
        state.pop("_store", None)
        network = state.pop("network_", None)
        if network is not None:
            state["_network_weights"] = {
                k: v.detach().cpu().numpy() for k, v in network.state_dict().items()
            }
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved_version = state.pop("_skfalcon_version", None)
        if saved_version != __version__:
            warnings.warn(
                f"This estimator was saved with skfalcon {saved_version} and is loaded with "
                f"skfalcon {__version__}; results may differ or loading may fail.",
                UserWarning,
                stacklevel=2,
            )
        weights = state.pop("_network_weights", None)
        super().__setstate__(state)
        if weights is None:
            return
        device = torch.device(self.device_)
        if device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn(
                f"This estimator was fitted on {device} but CUDA is not available here; "
                "it is loaded on the CPU.",
                UserWarning,
                stacklevel=2,
            )
            device = torch.device("cpu")
        network = _build_network(self._network_spec)
        network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        network.prior_fraction = getattr(self, "prior_fraction_", None)
        self.network_ = network.to(device).eval()
        self.device_ = device

    # ------------------------------------------------------------------ data conversion

    def _check_training_data(self, X, y, params: FlowPosteriorParams, reset: bool):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: "
                "call fit(theta, x) with the simulated observations x."
            )
        with named_errors("theta (X)"):
            theta = validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=1)
        # Flat rows (n, D) whatever the observations' shape; the embedding restores it.
        with named_errors("x (y)"):
            x = flatten_training_observations(
                y, len(theta), None if reset else self._observation_shape(), type(self).__name__
            )
        with named_errors("theta (X) and x (y)"):
            check_consistent_length(theta, x)
        # Values beyond MAX_ABS_VALUE would overflow float32 training: a failed simulation.
        huge = exceeds_magnitude(x).any(axis=1)
        bad = ~np.isfinite(x).all(axis=1) | huge
        n_bad = int(bad.sum())
        if n_bad:
            first = int(np.flatnonzero(bad)[0])
            what = "NaN or infinity" + (
                f" (or values of magnitude above {MAX_ABS_VALUE:.0e}, which overflow float32 "
                "training; rescale x if that is its scale)"
                if huge.any()
                else ""
            )
            if params.nan_policy == "raise" or n_bad == len(x):
                raise ValueError(
                    f"x holds {what} in {n_bad} of {len(x)} simulations (first at "
                    f"row {first}); with nan_policy={params.nan_policy!r} they "
                    + ("cannot be used." if params.nan_policy == "raise" else "leave no data.")
                )
            warnings.warn(
                f"Dropped {n_bad} of {len(x)} simulations whose x holds {what} "
                f"(first at row {first}); nan_policy='drop'.",
                UserWarning,
                stacklevel=4,
            )
            theta, x = theta[~bad], x[~bad]
        return theta, x, ~bad

    def _theta_to_u(self, theta: np.ndarray, prior, theta_shift, theta_scale):
        """Map theta (all or inferred columns) to u; returns (u, log|du/dtheta|, in_support)."""
        if prior is None:
            u = (theta - theta_shift) / theta_scale
            log_jac = np.full(len(theta), -np.log(theta_scale).sum())
            return u, log_jac, np.ones(len(theta), dtype=bool)
        if theta.shape[1] == prior.n_parameters:
            theta = theta[:, prior.inferred_mask]
        free = prior.free_mask[prior.inferred_mask]
        fixed_values = prior.fixed_values[prior.inferred_mask][~free]
        theta_free = torch.as_tensor(theta[:, free])
        u = prior.to_cube(theta_free).numpy()
        log_jac = prior.log_abs_det_jacobian(theta_free).numpy()
        support = prior.in_support(theta_free).numpy() & (theta[:, ~free] == fixed_values).all(1)
        return u, log_jac, support

    def _u_to_theta(self, u: np.ndarray) -> np.ndarray:
        """Map u of shape (..., n_free) to theta of shape (..., n_parameters_)."""
        prior = self.prior_
        if prior is None:
            return u * self.theta_scale_ + self.theta_shift_
        free = prior.free_mask[prior.inferred_mask]
        theta = np.empty(u.shape[:-1] + (len(free),))
        theta[..., free] = prior.from_cube(torch.as_tensor(u)).numpy()
        theta[..., ~free] = prior.fixed_values[prior.inferred_mask][~free]
        return theta

    def _observation_shape(self):
        # Estimators saved before observation_shape_ existed took flat x only.
        return getattr(self, "observation_shape_", (self.n_observation_features_,))

    def _check_observations(
        self, x, name: str = "x", batch: bool = False
    ) -> tuple[np.ndarray, bool]:
        """Observations as flat float64 rows ``(m, D)`` and whether a single one was given."""
        if x is None:
            raise ValueError(f"{name} is None; expected an array of numbers.")
        with named_errors(name):
            x2d, single = flatten_observations(
                x, self._observation_shape(), name=name, owner=type(self).__name__, batch=batch
            )
        check_magnitude(x2d, name)
        return x2d, single

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y):
        """Fit the posterior to simulations.

        The rows become the sample store (see :meth:`partial_fit`), taken as draws from the
        prior.

        Parameters
        ----------
        X : array-like of shape (n_simulations, n_parameters)
            Parameters ``theta`` the simulations were run with.
        y : array-like or dict
            Simulated observations ``x``, of shape ``(n_simulations, n_features)``,
            ``(n_simulations,)`` (one feature) or ``(n_simulations, *shape)``: each
            observation keeps its shape for a module embedding and is flattened for
            ``embedding=None``. A dict of named arrays (or a numpy structured array, which
            cross-validation can split) holds several inputs, each of shape
            ``(n_simulations, *shape_name)``.

        Returns
        -------
        self : FlowPosteriorEstimator
            The fitted estimator.
        """
        params = self._validated_params()
        warm = params.warm_start and hasattr(self, "network_")
        return self._fit(X, y, None, params, continue_training=warm, keep_store=False)

    def partial_fit(self, X, y, theta_log_prob=None):
        """Add simulations to the sample store and continue training on the whole store.

        The first call initialises the estimator as ``fit`` does. Each call is a round:

        1. the new rows join the store, split once into training and validation rows
           (``validation_fraction``); validation rows stay validation rows in later rounds;
        2. beyond ``store_capacity`` the oldest rows are dropped;
        3. with ``discard_samples``, rows whose log-ratio against their proposal is below
           ``log_ratio_threshold`` are dropped;
        4. training continues from the current networks (re-initialised with
           ``reset_network_after_pause``) for up to ``max_epochs`` with early stopping on
           the store's validation rows. ``history_`` grows across calls.

        Unlike ``MLPRegressor.partial_fit`` (one pass), a call trains to convergence, as a
        simulation round needs. A round that fails or diverges leaves the estimator, its
        networks and its store as they were. The store is not pickled: after loading, the
        next call starts a store with its own rows.

        Parameters
        ----------
        X : array-like of shape (n_simulations, n_parameters)
            Parameters ``theta``.
        y : array-like of shape (n_simulations, n_features) or (n_simulations,)
            Simulated observations ``x``.
        theta_log_prob : array-like of shape (n_simulations,), default=None
            Log-density, in ``theta`` space, of the distribution each row was drawn from,
            over the inferred, non-fixed parameters (marginalized ones are drawn from their
            prior and do not enter): what ``sample_proposal(..., return_log_prob=True)``
            returns. ``None`` means the rows were drawn from the prior.

        Returns
        -------
        self : FlowPosteriorEstimator
        """
        params = self._validated_params()
        fitted = hasattr(self, "network_")
        return self._fit(X, y, theta_log_prob, params, continue_training=fitted, keep_store=True)

    def _check_theta_log_prob(self, theta_log_prob, n_rows: int, prior) -> np.ndarray | None:
        if theta_log_prob is None:
            return None
        if prior is None:
            raise ValueError(
                "theta_log_prob needs a prior: with prior=None the training distribution is "
                "taken as the prior, so rows from a proposal cannot be told apart. Pass "
                "prior=[...] to the estimator."
            )
        log_prob = to_float_array(theta_log_prob, "theta_log_prob", ensure_all_finite=False)
        if log_prob.shape != (n_rows,):
            raise ValueError(
                f"theta_log_prob has shape {log_prob.shape}, but theta has {n_rows} rows; "
                f"expected shape ({n_rows},)."
            )
        if np.isnan(log_prob).any() or np.isposinf(log_prob).any():
            first = int(np.flatnonzero(~(np.isfinite(log_prob) | np.isneginf(log_prob)))[0])
            raise ValueError(
                f"theta_log_prob must be finite or -inf, got {log_prob[first]} at row {first}."
            )
        return log_prob

    def _fit(self, X, y, theta_log_prob, params, continue_training: bool, keep_store: bool):
        device = resolve_device(params.device)
        theta, x, keep = self._check_training_data(X, y, params, reset=not continue_training)
        n_dropped = int((~keep).sum())
        rng = np.random.RandomState(draw_seed(params.random_state))

        if continue_training:
            prior, shift, scale = self.prior_, self.theta_shift_, self.theta_scale_
        else:
            prior = (
                None
                if params.prior is None
                else make_prior(
                    params.prior,
                    marginalize=params.marginalize,
                    hypercube_bound=params.hypercube_bound,
                )
            )
            if prior is not None and theta.shape[1] != prior.n_parameters:
                raise ValueError(
                    f"theta has {theta.shape[1]} columns but the prior has "
                    f"{prior.n_parameters} parameters."
                )
            if prior is not None and prior.n_free == 0:
                raise ValueError(
                    f"The prior leaves nothing to infer: of its {prior.n_parameters} "
                    f"parameters, {int(prior.fixed_mask.sum())} are fixed and "
                    f"{int(prior.marginalized_mask.sum())} marginalized "
                    f"(marginalize={params.marginalize!r}); at least one must be neither."
                )
            shift, scale = np.zeros(theta.shape[1]), np.ones(theta.shape[1])
        if prior is None and not continue_training and len(theta) > 1:
            shift = theta.mean(axis=0)
            spread = theta.std(axis=0)
            scale = np.where(spread > 0, spread, 1.0)
        log_prob = self._check_theta_log_prob(theta_log_prob, len(keep), prior)

        u, log_jac, support = self._theta_to_u(theta, prior, shift, scale)
        if not support.all():
            first = int(np.flatnonzero(~support)[0])
            raise ValueError(
                f"{int((~support).sum())} of {len(theta)} theta rows lie outside the prior's "
                f"support (first: row {first}, theta={theta[first].tolist()}); were the "
                "simulations drawn from this prior?"
            )
        # Proposal densities in u space: the prior is uniform on the cube.
        if log_prob is None:
            cube_log_density = (
                0.0 if prior is None else -u.shape[1] * np.log(2 * prior.hypercube_bound)
            )
            log_proposal = np.full(len(u), cube_log_density)
            from_prior = np.ones(len(u), dtype=bool)
        else:
            log_proposal = log_prob[keep] - log_jac
            from_prior = np.zeros(len(u), dtype=bool)

        n_val = int(round(params.validation_fraction * len(u))) if len(u) > 1 else 0
        if params.validation_fraction > 0 and len(u) > 1:
            n_val = min(max(n_val, 1), len(u) - 1)
        is_validation = np.zeros(len(u), dtype=bool)
        is_validation[rng.permutation(len(u))[:n_val]] = True

        store = getattr(self, "_store", None) if continue_training and keep_store else None
        if store is None:
            store = SampleStore.empty(u.shape[1], x.shape[1:])
        store = store.append(
            torch.as_tensor(u, dtype=torch.float32),
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(log_proposal),
            torch.as_tensor(from_prior),
            torch.as_tensor(is_validation),
        )
        if params.store_capacity is not None and len(store) > params.store_capacity:
            n_val_kept = int(round(params.validation_fraction * params.store_capacity))
            store = store.keep_newest(params.store_capacity - n_val_kept, n_val_kept)
        n_discarded = 0
        if params.discard_samples and continue_training:
            log_ratio = log_ratio_to_proposal(self.network_, store, self.device_)
            kept = log_ratio >= params.log_ratio_threshold
            n_discarded = int((~kept).sum())
            if not bool((kept & ~store.is_validation).any()):
                raise ValueError(
                    f"discard_samples would drop all {int((~store.is_validation).sum())} "
                    f"training rows (every log-ratio is below log_ratio_threshold="
                    f"{params.log_ratio_threshold}); lower log_ratio_threshold or set "
                    "discard_samples=False. The estimator was left as it was."
                )
            store = store.select(kept, filters_prior_rows=True)
        # m: the exact prior, the prior mixed with a flow of the proposal rows, or a flow of
        # all rows (marginal="flow", or once discarding left prior rows biased).
        prior_fraction = (
            store.prior_fraction() if prior is not None and params.marginal == "auto" else None
        )
        prior_fraction = prior_fraction or None  # no prior rows: the flow models them all
        marginal_kind = _marginal_kind(prior is not None, prior_fraction)

        seed = draw_seed(rng)
        with torch_seed_scope(seed, device):
            if continue_training and not params.reset_network_after_pause:
                # Train a copy: a failed or interrupted round leaves the fitted model intact.
                network, network_spec = copy.deepcopy(self.network_), self._network_spec
            else:
                network_spec = (
                    self._network_spec
                    if continue_training
                    else {
                        "features": u.shape[1],
                        "observation_features": x.shape[1],
                        "embedding": embedding_spec(params, y),
                        "marginal": prior is not None,
                        "net_type": params.net_type,
                        "num_transforms": params.num_transforms,
                        "hidden_features": params.hidden_features,
                        "num_bins": params.num_bins,
                        "theta_norm": params.theta_norm,
                        "norm_momentum": params.norm_momentum,
                        "adaptive_momentum": params.adaptive_momentum,
                        "use_log_update": params.use_log_update,
                        "cube_bound": None if prior is None else prior.hypercube_bound,
                    }
                )
                network = _build_network(network_spec)
            network.prior_fraction = prior_fraction
            # While the prior serves as m the marginal flow is not trained (losses() skips
            # it): in the mixture it models proposal rows only, and pretraining it on prior
            # rows (uniform) left its normalisation far from the proposal's scale (10-D
            # Gaussian linear, 2,000 simulations, 4 seeds: Gaussian KL 0.53 with
            # pretraining, 0.40 without).
            marginal_rows = ~store.from_prior if marginal_kind == "mixture" else None
            progress = _Progress(params.max_epochs) if params.verbose else None
            epoch_offset = len(self.history_) if continue_training else 0
            train_rows = ~store.is_validation
            try:
                result = train(
                    network,
                    store.u[train_rows],
                    store.x[train_rows],
                    store.u[store.is_validation],
                    store.x[store.is_validation],
                    device=device,
                    batch_size=params.batch_size,
                    max_epochs=params.max_epochs,
                    lr=params.lr,
                    betas=params.betas,
                    weight_decay=params.weight_decay,
                    lr_decay_factor=params.lr_decay_factor,
                    lr_patience=params.lr_patience,
                    early_stop_patience=params.early_stop_patience,
                    use_best_models=params.use_best_models,
                    cache_on_device=params.cache_on_device,
                    max_cache_samples=params.max_cache_samples,
                    on_epoch_end=progress,
                    epoch_offset=epoch_offset,
                    marginal_rows_train=None
                    if marginal_rows is None
                    else marginal_rows[train_rows],
                    marginal_rows_val=(
                        None if marginal_rows is None else marginal_rows[store.is_validation]
                    ),
                )
            except TrainingDivergedError as exc:
                raise RuntimeError(
                    f"Training diverged: {exc} (lr={params.lr}). Lower lr, raise batch_size, "
                    "or check x and theta for extreme values; the estimator was left as it was "
                    "before this call."
                ) from None
            finally:
                if progress is not None:
                    progress.close()
        if result.interrupted:
            warnings.warn(
                "Training was interrupted; the estimator keeps the best weights so far.",
                UserWarning,
                stacklevel=3,
            )
        elif not result.stopped_early:
            warnings.warn(
                f"Training reached max_epochs={params.max_epochs} before the validation loss "
                "stopped improving; raise max_epochs or lr for a converged fit.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if result.history:
            best = result.history[result.best_epoch - epoch_offset]
            logger.info(
                "fit: %d epochs in %.1f s, best epoch %d (validation loss %.4f), %s; "
                "%d rows in the store, marginal: %s",
                len(result.history),
                sum(r["seconds"] for r in result.history),
                result.best_epoch,
                best["val_loss"],
                "interrupted"
                if result.interrupted
                else ("stopped early" if result.stopped_early else "max_epochs reached"),
                len(store),
                marginal_kind
                if prior_fraction is None
                else f"{marginal_kind} ({prior_fraction:.2f})",
            )
        if result.n_skipped_steps:
            warnings.warn(
                f"Skipped {result.n_skipped_steps} training step(s) with a non-finite loss.",
                UserWarning,
                stacklevel=3,
            )

        self.prior_ = prior
        self.theta_shift_, self.theta_scale_ = shift, scale
        self.n_observation_features_ = x.shape[1]
        self.observation_shape_ = observation_shape_of(y)
        self.n_parameters_ = theta.shape[1] if prior is None else int(prior.inferred_mask.sum())
        self.device_ = device
        self.network_ = network
        self._network_spec = network_spec
        self.marginal_ = marginal_kind
        self.prior_fraction_ = prior_fraction
        self._store = store
        self.n_stored_simulations_ = len(store)
        self.n_discarded_simulations_ = n_discarded
        self.history_ = (self.history_ if continue_training else []) + result.history
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = result.best_epoch
        self.n_dropped_simulations_ = n_dropped
        self.n_skipped_steps_ = result.n_skipped_steps
        self._log_z_seed = seed
        self._log_z_cache = {}
        return self

    # ------------------------------------------------------------------ inference

    def _sample_u(self, summary: torch.Tensor, n: int, exponent: float, params):
        """Sample u for summaries (m, c), in chunks of bounded size.

        Returns u (m, n, d), the ESS (m,) and each sample's normalized log-density in u
        space under the target (m, n). No draw leaves the cube: both flows model its
        probit image.
        """
        network = self.network_
        m = summary.shape[0]
        if not network.has_marginal or (network.marginal_is_prior and exponent == 1.0):
            # The target is q itself: without a prior, or with the exact prior as m, whose
            # ratio q/m is q times a constant; the probit map keeps q's draws in the cube.
            # Sampling is then exact and needs no candidates.
            return self._sample_conditional(summary, n)
        per_sample = params.num_proposals
        budget = _inference_rows(self.device_)
        n_chunk = max(1, min(n, budget // per_sample))
        m_chunk = max(1, budget // (per_sample * n_chunk))
        samples, ess, log_density = [], [], []
        for i in range(0, m, m_chunk):
            parts = []
            for j in range(0, n, n_chunk):
                parts.append(
                    importance_sample(
                        network,
                        summary[i : i + m_chunk],
                        min(n_chunk, n - j),
                        num_proposals=per_sample,
                        beta=params.proposal_mixture_beta,
                        bound=self.prior_.hypercube_bound,
                        out_of_bounds_penalty=params.out_of_bounds_penalty,
                        nan_replacement=params.nan_replacement,
                        exponent=exponent,
                        min_ess=_ESS_PER_SAMPLE * min(n_chunk, n - j),
                        max_rounds=_MAX_POOL_ROUNDS,
                    )
                )
            samples.append(torch.cat([p.u for p in parts], dim=1))
            log_density.append(torch.cat([p.log_density for p in parts], dim=1))
            ess.append(sum(p.ess for p in parts))
        return torch.cat(samples), torch.cat(ess), torch.cat(log_density)

    def _sample_conditional(self, summary: torch.Tensor, n: int):
        """Exact draws from q for summaries (m, c), chunked like the candidate pools."""
        m = summary.shape[0]
        budget = _inference_rows(self.device_)
        n_chunk = max(1, min(n, budget))
        m_chunk = max(1, budget // n_chunk)
        samples, log_density = [], []
        for i in range(0, m, m_chunk):
            parts = [
                self.network_.conditional.sample_and_log_prob(
                    (min(n_chunk, n - j),), summary[i : i + m_chunk]
                )
                for j in range(0, n, n_chunk)
            ]
            samples.append(torch.cat([u for u, _ in parts]).transpose(0, 1))
            log_density.append(torch.cat([lq for _, lq in parts]).transpose(0, 1))
        return torch.cat(samples), torch.full((m,), float(n)), torch.cat(log_density)

    def sample(self, x, n_samples, *, random_state=None, return_ess=False):
        """Draw posterior samples of ``theta`` given observations.

        Parameters
        ----------
        x : array-like of shape (n_features,) or (n_observations, n_features), or dict
            One observation, or several sampled in one batched pass. Observations fitted
            with another shape are ``observation_shape_`` (one) or
            ``(n_observations, *observation_shape_)``; dict observations are dicts (or
            structured arrays) of such arrays, one per name.
        n_samples : int
            Samples per observation.
        random_state : int, RandomState instance or None, default=None
            Seed of this draw; ``None`` falls back to the estimator's ``random_state``.
        return_ess : bool, default=False
            Also return the effective sample size of the importance-sampling pool of each
            observation (``n_samples`` for ``prior=None``, which samples exactly).

        Returns
        -------
        theta : ndarray
            Posterior samples, float64, of shape ``(n_samples, n_parameters)`` for one
            observation or ``(n_observations, n_samples, n_parameters)`` for several.
        ess : float or ndarray of shape (n_observations,)
            Only with ``return_ess``. The pool grows (up to ``8 * num_proposals``
            candidates per sample) until it reaches ``4 * n_samples``; a warning is emitted
            when it stays below ``n_samples``.
        """
        check_is_fitted(self, "network_")
        n_samples = _check_positive_int(n_samples, "n_samples")
        params = self._validated_params()
        x2d, single = self._check_observations(x)
        with named_errors("random_state"):
            seed = draw_seed(self.random_state if random_state is None else random_state)
        with torch.no_grad(), torch_seed_scope(seed, self.device_):
            summary = self.network_.embed(
                torch.as_tensor(x2d, dtype=torch.float32).to(self.device_)
            )
            u, ess, _ = self._sample_u(summary, n_samples, 1.0, params)
        theta = self._u_to_theta(u.to("cpu", torch.float64).numpy())
        ess = ess.cpu().numpy().astype(np.float64)
        self._warn_low_ess(ess, n_samples)
        if single:
            theta, ess = theta[0], float(ess[0])
        return (theta, ess) if return_ess else theta

    def _warn_low_ess(self, ess: np.ndarray, n_samples: int) -> None:
        low = ess < n_samples
        if low.any():
            warnings.warn(
                f"Low effective sample size: importance sampling found {ess.min():.1f} "
                f"effective candidates for {n_samples} requested samples "
                f"({int(low.sum())} of {len(ess)} observation(s) below {n_samples}); the "
                "samples repeat and may be inaccurate. Raise num_proposals, or the "
                "posterior estimate may be poor for this observation.",
                UserWarning,
                stacklevel=3,
            )

    def _log_normalizers(self, x_unique: np.ndarray) -> np.ndarray:
        """log Z(x) for distinct observations (rows of ``x_unique``), cached per observation."""
        if self.network_.marginal_is_prior:
            # q/m = q (2b)^d with q normalized on the cube (the probit map): Z = (2b)^d.
            log_volume = self.network_.features * np.log(2 * self.prior_.hypercube_bound)
            return np.full(len(x_unique), log_volume)
        keys = [row.tobytes() for row in x_unique]
        missing = [i for i, key in enumerate(keys) if key not in self._log_z_cache]
        if missing:
            params = self._validated_params()
            chunk = max(1, _inference_rows(self.device_) // _LOG_Z_CANDIDATES)
            xt = torch.as_tensor(x_unique[missing], dtype=torch.float32).to(self.device_)
            values = []
            with torch.no_grad(), torch_seed_scope(self._log_z_seed, self.device_):
                for start in range(0, len(missing), chunk):
                    pool = draw_candidates(
                        self.network_,
                        self.network_.embed(xt[start : start + chunk]),
                        _LOG_Z_CANDIDATES,
                        beta=params.proposal_mixture_beta,
                        bound=self.prior_.hypercube_bound,
                    )
                    values.append(log_normalizer(pool).cpu().double().numpy())
            for i, value in zip(missing, np.concatenate(values), strict=True):
                self._log_z_cache[keys[i]] = float(value)
        return np.array([self._log_z_cache[key] for key in keys])

    def log_prob(self, theta, x):
        r"""Normalized posterior log-density :math:`\log p(\theta \mid x)` in ``theta`` space.

        :math:`\log q(u \mid x) - \log m(u) - \log Z(x) + \log |\partial u / \partial \theta|`,
        with :math:`Z(x)` estimated by importance sampling once per observation and cached.
        ``-inf`` outside the prior's support.

        Parameters
        ----------
        theta : array-like of shape (n, n_parameters) or (n_parameters,)
            Parameter values (all prior columns, or only those not marginalized).
        x : array-like of shape (n_features,), (1, n_features) or (n, n_features), or dict
            One observation for all rows of ``theta``, or one per row. Observations of
            another shape or named inputs follow :meth:`sample`.

        Returns
        -------
        log_prob : ndarray of shape (n,)
        """
        check_is_fitted(self, "network_")
        x2d, _ = self._check_observations(x)
        return self._log_prob(theta, x2d)

    def _log_prob(self, theta, x2d: np.ndarray) -> np.ndarray:
        theta = to_float_array(theta, "theta")
        given_shape = theta.shape
        theta = theta[None, :] if theta.ndim == 1 else theta
        allowed = {self.n_parameters_, self.n_features_in_}
        if theta.ndim != 2 or theta.shape[1] not in allowed:
            raise ValueError(
                f"theta has shape {given_shape}; expected (n, {self.n_parameters_})"
                + (f" or (n, {self.n_features_in_})" if len(allowed) > 1 else "")
                + "."
            )
        if len(x2d) == 1:
            x2d = np.broadcast_to(x2d, (len(theta), x2d.shape[1]))
        elif len(x2d) != len(theta):
            raise ValueError(
                f"x has {len(x2d)} observations but theta has {len(theta)} rows; pass one "
                "observation, or one per row of theta."
            )
        u, log_jac, support = self._theta_to_u(
            theta, self.prior_, self.theta_shift_, self.theta_scale_
        )
        unique_x, inverse = np.unique(x2d, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        with torch.no_grad():
            summary = self.network_.embed(
                torch.as_tensor(unique_x, dtype=torch.float32).to(self.device_)
            )
            u_t = torch.as_tensor(u, dtype=torch.float32).to(self.device_)
            rows = _inference_rows(self.device_)
            log_ratio = torch.cat(
                [
                    self.network_.log_ratio(u_t[i : i + rows], summary[inverse[i : i + rows]])
                    for i in range(0, len(u_t), rows)
                ]
            )
            log_ratio = log_ratio.cpu().double().numpy()
        log_p = log_ratio + log_jac
        if self.prior_ is not None:
            log_p = log_p - self._log_normalizers(unique_x)[inverse]
        return np.where(support, log_p, -np.inf)

    def score(self, X, y):
        """Mean posterior log-density of ``theta`` (``X``) given ``x`` (``y``); higher is better.

        Parameters
        ----------
        X : array-like of shape (n, n_parameters)
            Parameters ``theta``.
        y : array-like of shape (n, n_features) or (n,), or dict
            Observations ``x``, one per row of ``theta`` (as in ``fit``).

        Returns
        -------
        score : float
        """
        check_is_fitted(self, "network_")
        with named_errors("theta (X)"):
            theta = validate_data(self, X, reset=False, dtype=np.float64)
        x2d, _ = self._check_observations(y, "y", batch=True)
        return float(np.mean(self._log_prob(theta, x2d)))

    def sample_proposal(self, x, n_samples, *, random_state=None, return_log_prob=False):
        r"""Draw parameters for new simulations from the widened posterior.

        Samples :math:`\pi(u)\,[p(u \mid x) / \pi(u)]^{1 - \gamma}` with ``gamma`` from the
        hyperparameters: ``gamma=0`` is the posterior, ``gamma=1`` the prior. Before any
        fit, it samples the prior. Marginalized and fixed columns are drawn from the prior,
        so the rows can be passed to the simulator as they are.

        Parameters
        ----------
        x : array-like of shape (n_features,), or dict
            The observation to focus on (one observation, as in :meth:`sample`).
        n_samples : int
            Number of parameter vectors.
        random_state : int, RandomState instance or None, default=None
            Seed of this draw; ``None`` falls back to the estimator's ``random_state``.
        return_log_prob : bool, default=False
            Also return the log-density of each row under the proposal, in ``theta`` space,
            over the inferred non-fixed parameters: what :meth:`partial_fit` takes as
            ``theta_log_prob``. The widened target is normalized by an importance-sampling
            estimate of its integral over the cube.

        Returns
        -------
        theta : ndarray of shape (n_samples, n_prior_parameters)
        log_prob : ndarray of shape (n_samples,)
            Only with ``return_log_prob``.
        """
        n_samples = _check_positive_int(n_samples, "n_samples")
        params = self._validated_params()
        fitted = hasattr(self, "network_")
        prior = self.prior_ if fitted else None
        if prior is None and params.prior is not None and not fitted:
            prior = make_prior(
                params.prior, marginalize=params.marginalize, hypercube_bound=params.hypercube_bound
            )
        if prior is None:
            raise ValueError(
                "sample_proposal needs a prior: the estimator was built with prior=None, so "
                "it cannot tell the prior apart from the training distribution. Pass "
                "prior=[...] to the estimator."
            )
        with named_errors("random_state"):
            seed = draw_seed(self.random_state if random_state is None else random_state)
        device = self.device_ if fitted else torch.device("cpu")
        with torch.no_grad(), torch_seed_scope(seed, device):
            theta = prior.sample(n_samples)
            if fitted:
                x2d, _ = self._check_observations(x)
                if x2d.shape[0] != 1:
                    raise ValueError(
                        f"x must be one observation of shape ({self.n_observation_features_},), "
                        f"got shape {x2d.shape}."
                    )
                summary = self.network_.embed(torch.as_tensor(x2d, dtype=torch.float32).to(device))
                u, _, log_density_u = self._sample_u(summary, n_samples, 1.0 - params.gamma, params)
                theta[:, prior.free_mask] = prior.from_cube(u[0].to("cpu", torch.float64))
                theta_free = theta[:, prior.free_mask]
                log_prob = log_density_u[0].to("cpu", torch.float64) + (
                    prior.log_abs_det_jacobian(theta_free)
                )
            else:
                log_prob = prior.log_prob(theta[:, prior.free_mask])
        theta = theta.numpy()
        return (theta, log_prob.numpy()) if return_log_prob else theta

    # ------------------------------------------------------------------ truncation

    def _posterior_box(
        self, x, n_samples: int, tail: float, random_state
    ) -> tuple[np.ndarray, np.ndarray]:
        """Box in u between the ``tail`` and ``1 - tail`` quantiles of each coordinate.

        Quantiles of ``n_samples`` posterior samples of ``x``, over the inferred, non-fixed
        parameters: ``(low, high)``, each of shape ``(d,)``. Used by the truncated strategy
        of :class:`~skfalcon.SequentialInference`.
        """
        theta = self.sample(x, n_samples, random_state=random_state)
        u = self._theta_to_u(theta, self.prior_, None, None)[0]
        return np.quantile(u, tail, axis=0), np.quantile(u, 1.0 - tail, axis=0)

    def _box_to_theta(self, low, high) -> np.ndarray:
        """The box ``[low, high]`` in u as ``(2, n_prior_parameters)`` bounds on ``theta``.

        Each coordinate maps through its own monotone prior transform, so a box stays a
        box. Fixed columns are bounded by their value, marginalized ones are not bounded.
        """
        prior = self.prior_
        box = np.tile(np.array([[-np.inf], [np.inf]]), (1, prior.n_parameters))
        box[:, prior.fixed_mask] = prior.fixed_values[prior.fixed_mask]
        u = torch.as_tensor(np.stack([low, high]), dtype=torch.float64)
        box[:, prior.free_mask] = prior.from_cube(u).numpy()
        return box

    def _sample_prior_box(self, low, high, n_samples: int, random_state) -> np.ndarray:
        """Draw from the prior restricted to the box ``[low, high]`` in u.

        The prior is uniform in u, so its restriction to a box is uniform on the box; in
        there its density is the prior's times the constant ``1 / P(box)``, and rows drawn
        from it can join the store as prior rows. Marginalized and fixed columns come
        from the prior, as in :meth:`sample_proposal`.
        """
        prior = self.prior_
        rng = check_random_state(random_state)
        u = rng.uniform(low, high, size=(n_samples, len(low)))
        with torch.no_grad(), torch_seed_scope(draw_seed(rng), torch.device("cpu")):
            theta = prior.sample(n_samples)
            theta[:, prior.free_mask] = prior.from_cube(torch.as_tensor(u, dtype=torch.float64))
        return theta.numpy()


def _marginal_kind(has_prior: bool, prior_fraction: float | None) -> str | None:
    """``marginal_``: what serves as m, from the prior rows' share of the training rows."""
    if not has_prior:
        return None
    if prior_fraction is None:
        return "flow"
    return "prior" if prior_fraction == 1.0 else "mixture"


def _build_network(spec: dict) -> DualFlowPosterior:
    """The untrained network described by ``spec`` (recorded at fit, used to unpickle)."""
    spec = dict(spec)
    observation_features = spec.pop("observation_features")
    embedding_options = spec.pop("embedding", None)
    if embedding_options is None:
        embedding = RunningNorm(observation_features, spec["norm_momentum"])
        context = observation_features
    else:
        embedding, context = build_embedding(**embedding_options)
    return DualFlowPosterior(spec.pop("features"), embedding, context, **spec)


class _Progress:
    """A tqdm bar over epochs showing the losses and the learning rate."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc="fit", unit="epoch", leave=True)
        self._start = time.perf_counter()

    def __call__(self, record: dict) -> None:
        self._bar.set_postfix(
            train=f"{record['train_loss']:.3f}",
            val=f"{record['val_loss']:.3f}",
            lr=f"{record['lr']:.1e}",
            refresh=False,
        )
        self._bar.update(1)
        logger.debug("epoch %(epoch)d: %(train_loss).4f / %(val_loss).4f", record)

    def close(self) -> None:
        self._bar.close()
