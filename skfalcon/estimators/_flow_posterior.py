"""FlowPosteriorEstimator: the scikit-learn façade of the dual-flow posterior."""

import copy
import dataclasses
import math
import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from skfalcon.engine import (
    AUTO_FAMILIES,
    LogNormalizerCache,
    NetworkSpec,
    SamplerConfig,
    SampleStore,
    TrainingDivergedError,
    choose_marginal,
    default_hidden_features,
    default_num_transforms,
    log_posterior,
    log_ratio_to_proposal,
    sample_posterior,
    torch_seed_scope,
    train,
    validation_mask,
)
from skfalcon.estimators._names import check_names, parameter_names, samples_frame
from skfalcon.estimators._observations import (
    embedding_spec,
    flatten_observations,
    observation_shape_of,
)
from skfalcon.estimators._params import FlowPosteriorParams, validate_params
from skfalcon.estimators._preprocessing import preprocess_training, transform_observations
from skfalcon.estimators._report import FitProgress, InferenceProgress, report_fit
from skfalcon.estimators._state import restore_state, saved_state
from skfalcon.estimators._training_data import (
    check_theta_log_prob,
    check_training_data,
    to_training_rows,
)
from skfalcon.misspecification import fit_reference, warn_if_misspecified
from skfalcon.priors import Standardizer, make_prior, readable_prior
from skfalcon.utils import draw_seed, resolve_device, round_seed
from skfalcon.utils.rows import unique_rows
from skfalcon.utils.validation import (
    as_array_input,
    check_magnitude,
    check_positive_int,
    named_errors,
    to_float_array,
)

__all__ = ["FlowPosteriorEstimator"]

#: The most bytes :meth:`FlowPosteriorEstimator.sample` returns from one call: a quarter of
#: the machine's physical memory, at most 8 GiB (intermediate arrays take a few times more).
MAX_SAMPLE_BYTES = min(2**33, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
# Hyperparameters that inference reads; validated on their own, so that a bad training
# hyperparameter set after a fit does not block sampling the fitted model.
_INFERENCE_PARAMS = ("num_proposals", "proposal_mixture_beta", "gamma")


class FlowPosteriorEstimator(BaseEstimator):
    r"""Posterior estimation with a conditional and a marginal normalizing flow.

    Learns :math:`p(\theta \mid x)` from simulations :math:`(\theta, x)`. Parameters are
    mapped by their prior's CDFs to a cube, where the prior is uniform; a conditional flow
    :math:`q(u \mid s(x))` and a marginal flow :math:`m(u)` are fitted jointly and the
    posterior is :math:`p(u \mid x) \propto q(u \mid x) / m(u)` on the cube, which holds
    whatever distribution the training parameters came from. What of :math:`m` is known
    exactly is used exactly: while every simulation came from the prior, :math:`m` is the
    prior and the posterior is :math:`q`, sampled exactly; otherwise samples are drawn by
    importance sampling from :math:`\beta q + (1 - \beta) m`.

    Following scikit-learn, ``fit(X, y)`` takes the parameters ``theta`` as ``X`` and the
    simulated observations ``x`` as ``y``: write ``est.fit(theta, x)``.

    Parameters
    ----------
    prior : list of tuple or FactorizedPrior, default=None
        The prior the training ``theta`` were drawn from, one spec per parameter, e.g.
        ``[("uniform", -1, 1), ("normal", 0, 1)]`` (see :mod:`skfalcon.priors`). ``None``
        means unknown: ``theta`` is standardized from the training rows and the posterior is
        the conditional flow alone (plain neural posterior estimation).
    marginalize : int or list of int, default=None
        Indices of nuisance parameters that are simulated but not inferred (negative
        indices count from the end).
    net_type : str, default="nsf"
        Flow family of both flows. ``"auto"`` trains a network of each of ``"nsf"``,
        ``"maf"`` (the affine autoregressive flow) and ``"gaussian"`` on the same rows from
        the same seed and keeps the one whose posterior flow reads the lower validation
        loss, the held-out negative log-likelihood (``validation_losses_``); ``"nsf"``
        without validation rows. The affine flow has fewer parameters and wins where the
        posterior is close to Gaussian, the Gaussian where it is Gaussian with a mean
        linear in the observation; the splines win where it is neither (see the user
        guide). Later ``partial_fit`` rounds keep the family chosen, unless
        ``reset_network=True``. ``"gaussian"`` is
        :math:`\mathcal{N}(A s(x) + b, L L^\top)` on the probit image of the cube
        (:mod:`skfalcon.engine.gaussian`): a linear regression with a full covariance,
        exact for linear-Gaussian simulators under Gaussian priors; ``num_transforms``,
        ``hidden_features`` and ``num_bins`` are unused. ``"nsf"`` is autoregressive:
        densities take one network pass per transform, samples one pass per parameter per
        transform, each through only the units that parameter depends on.
        ``"spline_coupling"`` puts the same splines in coupling layers, one pass per
        transform both ways, at some cost in accuracy on the benchmark tasks (see the user
        guide).
        ``"nsf_coupling"``, ``"maf"``, ``"nice"``, ``"realnvp"``, ``"naf"``, ``"unaf"``,
        ``"ncsf"``, ``"sospf"``, ``"bpf"`` and ``"gf"`` are zuko's families.
        ``"flow_matching"`` is a continuous flow trained by flow matching (one residual
        vector field of widths ``hidden_features``; ``num_transforms`` and ``num_bins``
        unused; the validation loss is its regression loss): densities and samples solve
        an ODE, slower than the discrete families, and above 10 parameters densities are
        stochastic estimates (see :mod:`skfalcon.engine.flow_matching`). It trains best
        on a longer schedule (``lr=1e-3``, ``batch_size=256``,
        ``early_stop_patience=50``, ``lr_patience=20``, ``max_epochs=1000``; see the
        user guide).
    num_transforms : int, default=None
        Number of flow transforms; ``None`` is 5 for ``"spline_coupling"`` (each layer
        transforms half of the coordinates) and 3 for the other families.
    hidden_features : tuple of int, default=None
        Hidden layer widths of each transform's network, or of the flow-matching field's
        residual blocks; ``None`` is ``(64, 64)``, and four blocks of 128 for
        ``"flow_matching"``.
    num_bins : int, default=8
        Spline bins (``"nsf"``, ``"spline_coupling"``, ``"nsf_coupling"`` and ``"ncsf"``
        only). With the weight average, 8 bins read a lower KL divergence from the exact
        posterior than 16 on the 10-D Gaussian linear task and the Gaussian mixture.
    ensemble_size : int, default=2
        Number of posteriors trained side by side, each with its own embedding and flows,
        initialised independently and trained on the same minibatches (the losses in
        ``history_`` are then sums over members). The posterior is the equal-weight
        mixture of their normalized posteriors: :meth:`sample` draws each sample's member
        at random, :meth:`log_prob` is the log of their mean density, and
        :meth:`sample_proposal` draws from the mixture of the members' widened
        posteriors. Training and :meth:`log_prob` cost about ``ensemble_size`` times as
        much; :meth:`sample` about the same, since each draw comes from one member. Two
        members read a lower C2ST than one on the benchmark tasks (figures in
        ``benchmarks/RESULTS.md``); 1 fits fastest.
    embedding : None, str, nn.Module, callable or dict, default=None
        Summary network of ``x``, trained jointly with the flows (see
        :doc:`/user_guide/embeddings`). ``None``: the flattened ``x``, normalised online.
        ``"linear"``, ``"mlp"``, ``"cnn1d"`` (series ``(length,)`` or ``(channels,
        length)``) or ``"deepset"`` (i.i.d. trials): presets sized by
        ``embedding_features`` and ``embedding_hidden_features``. A ``torch.nn.Module``
        gets observations of their own shape ``(n, *shape)`` (or a dict of such tensors)
        and returns ``(n, n_summaries)``; ``fit`` trains a deep copy of it. A callable is
        called as ``factory(observation_shape)`` and returns such a module (e.g.
        ``functools.partial(CNN1dEmbedding, channels=(8, 16))``). For dict observations, a
        dict ``{name: embedding}`` embeds each input on its own.
    embedding_features : int, default=32
        Summary size of each preset.
    embedding_hidden_features : tuple of int, default=(128, 128)
        Hidden widths of the presets' perceptrons.
    x_preprocessor : scikit-learn transformer, default=None
        Applied to every ``x`` before the networks see it, e.g. ``PCA(3)``,
        ``FunctionTransformer(np.log1p)``, a ``Pipeline`` or a ``ColumnTransformer``. A
        clone is fitted on the training ``x`` (after ``nan_policy``) by ``fit`` and by the
        first ``partial_fit`` (later rounds and ``warm_start`` keep it: the networks learned
        its representation) and stored as ``x_preprocessor_``. It gets ``x`` as a DataFrame
        with the columns seen at fit when ``x`` had column names, otherwise as the 2-D array
        of flat rows; its output must be dense and numeric. An embedding that reads the
        observation's shape needs a preprocessor that keeps every feature. Use it instead of
        a ``Pipeline`` ending in this estimator, which would transform ``theta``.
    theta_norm : bool, default=True
        Put an online running normalisation of :math:`u` in front of each flow.
    norm_momentum : float, default=0.01
        Momentum of the running normalisations of :math:`u` and ``x``.
    lr : float, default=None
        AdamW learning rate. ``None`` is :math:`2 \cdot 10^{-3} \sqrt{B / 512}` for
        minibatches of :math:`B` rows (square-root scaling with the batch size; 2e-3 at
        the 512 rows of most fits), and ten times that for ``net_type="gaussian"``.
    weight_decay : float, default=0.0
        AdamW decoupled weight decay.
    ema_epochs : float, default=3.0
        Time constant, in epochs, of an exponential moving average of the weights that
        follows the optimizer's; the average is what validation scores, early stopping
        keeps and inference uses. It smooths the minibatch noise out of the weights,
        which a snapshot of the optimizer's keeps (figures in the user guide). It lags
        the optimizer by about its time constant: set it lower for fits of a few
        epochs. 0 uses the optimizer's weights.
    lr_decay_factor : float, default=0.5
        Factor of the learning rate when the validation loss plateaus.
    lr_patience : int, default=10
        Epochs without improvement before the learning rate decays.
    early_stop_patience : int, default=20
        Epochs without improvement before training stops. Slowly converging posteriors
        (the Gaussian mixture's, two moons') gain from the longer wait. Training also
        stops, whatever the patience, once the validation loss has clearly risen for ten
        epochs while the training loss fell (overfitting; see ``history_``).
    validation_fraction : float, default=0.1
        Fraction of simulations held out for early stopping and model selection.
    use_best_models : bool, default=True
        Use the weights of the best validation epoch for inference.
    max_epochs : int, default=200
        Maximum number of epochs.
    batch_size : int, default=None
        Minibatch size. ``None``: for one or two parameters 1,024 when the training rows
        fill eight such batches, else 512 (there a step of the small flows costs about
        the same at either size, so the larger batch shortens the fit at the same
        accuracy); above two parameters the largest of 512, 256 and 128 that the training
        rows fill eight times, else 64, so that small stores (sequential rounds) train
        eight steps an epoch or more (figures in the user guide).
    num_proposals : int, default=4
        Importance-sampling candidates per output sample. While the pool's effective
        sample size is below four times the number of samples requested, further pools
        of this size are drawn, up to 8.
    proposal_mixture_beta : float, default=0.5
        Weight :math:`\beta` of the conditional flow in the candidate mixture.
    gamma : float, default=0.5
        Widening of :meth:`sample_proposal`: 0 is the posterior, 1 the prior.
    marginal : {"auto", "flow"}, default="auto"
        What serves as :math:`m(u)`. ``"auto"`` uses what is known exactly: the prior
        while every stored row was drawn from it; the mixture
        :math:`\alpha \pi + (1 - \alpha) h` once rows from proposals arrive (``partial_fit``
        with ``theta_log_prob``), with :math:`\alpha` the prior rows' share and :math:`h`
        a flow of the proposal rows; a flow of all rows once discarding dropped prior
        rows. ``"flow"`` always learns :math:`m`, as Falcon does.
    store_capacity : int, default=None
        Most rows kept in the sample store across ``partial_fit`` calls, the oldest dropped
        first (each split keeps its share). ``None`` keeps all.
    discard_log_ratio : float, default=None
        Before each ``partial_fit`` round, drop stored rows whose log-ratio
        :math:`\log q(u_i \mid x_i) - \log g_i(u_i)` against the proposal :math:`g_i`
        they were drawn from is below this value. ``None`` keeps every row.
    nan_policy : {"drop", "raise"}, default="drop"
        What to do with simulations whose ``x`` holds NaN or infinity: drop them with a
        warning (counted in ``n_dropped_simulations_``) or raise. Non-finite ``theta``
        always raises.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
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
    feature_names_in_ : ndarray of str
        Column names of ``theta``, when it was a DataFrame with string column names; a
        DataFrame ``theta`` given to any method must have these columns (or the inferred
        ones only, for :meth:`log_prob`), in this order.
    observation_names_in_ : ndarray of str
        Column names of ``x``, when it was a DataFrame with string column names; checked
        likewise for every DataFrame (or Series, for one observation) ``x``.
    n_observation_features_ : int
        Number of features of ``x``, flattened (for dict observations, of all inputs),
        before ``x_preprocessor_``.
    observation_shape_ : tuple of int or dict of str to tuple of int
        Shape of one observation, or of each named input.
    n_parameters_ : int
        Number of columns returned by :meth:`sample` (parameters not marginalized).
    parameter_space_ : FactorizedPrior or Standardizer
        The map between ``theta`` and the flows' coordinates :math:`u`.
    x_preprocessor_ : transformer or None
        The fitted clone of ``x_preprocessor``.
    x_shift_, x_scale_ : ndarray of shape (n_flat_features,)
        Mean and standard deviation (1 for a constant feature) of each flat feature of the
        training ``x`` (once through ``x_preprocessor_``). Every observation is
        standardized with them in float64 before it is cast to float32 for the networks,
        so a large offset loses no precision; the embedding sees standardized features.
    prior_ : FactorizedPrior or None
        The resolved prior (``None`` for ``prior=None``).
    marginal_ : {"prior", "mixture", "flow"} or None
        The density in use as :math:`m` (see ``marginal``); ``None`` without a prior.
    prior_fraction_ : float or None
        :math:`\alpha`, the share of training rows drawn from the prior, when
        ``marginal_`` is ``"prior"`` (1.0) or ``"mixture"``.
    device_ : torch.device
        The device the networks live on.
    network_ : DualFlowPosterior or EnsemblePosterior
        The trained flows and embedding (torch module); an ensemble of such members when
        ``ensemble_size > 1``.
    net_type_ : str
        The flow family of ``network_``: ``net_type``, or the one ``"auto"`` chose.
    validation_losses_ : dict of str to float
        Each flow family the last fit or round trained, and the validation loss of its
        posterior flow at its best epoch (``inf`` without validation rows): one entry,
        or with ``net_type="auto"`` one per family tried.
    history_ : list of dict
        One record per epoch: ``train_loss``, ``val_loss`` (and their conditional and
        marginal parts), ``best_val_loss``, ``lr``, ``skipped_steps``, ``seconds``, and
        ``overfitting``: whether that epoch's fit overfitted (its validation loss rose well
        above its best for many epochs while the training loss fell; a warning says so).
    x_reference_ : dict of ndarray or None
        Statistics of the training observations as the networks see them, for the check
        of :mod:`skfalcon.misspecification`; ``None`` in estimators loaded from files
        written before the check existed, which skip it.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        Epoch whose weights are in use when ``use_best_models``.
    n_stored_simulations_ : int
        Rows in the sample store after the last fit.
    n_discarded_simulations_ : int
        Rows dropped by ``discard_log_ratio`` in the last ``partial_fit``.
    n_dropped_simulations_ : int
        Simulations dropped by ``nan_policy="drop"`` in the last fit.
    n_skipped_steps_ : int
        Training steps skipped in the last fit because their loss was not finite.
    interrupted_ : bool
        Whether the last fit was cut short by a ``KeyboardInterrupt`` (Ctrl-C): its best
        weights so far are kept, with a warning. One before the first epoch ends leaves
        the estimator as it was and is raised again.

    See Also
    --------
    skfalcon.SequentialInference : Rounds of simulations focused on one observation.
    skfalcon.datasets.TwoMoons : A benchmark simulator to try it on.

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
    >>> est.sample(x[0], 100, as_frame=True).columns.tolist()
    ['theta0', 'theta1']
    """

    def __init__(
        self,
        prior=None,
        *,
        marginalize=None,
        net_type="nsf",
        num_transforms=None,
        hidden_features=None,
        num_bins=8,
        ensemble_size=2,
        embedding=None,
        embedding_features=32,
        embedding_hidden_features=(128, 128),
        x_preprocessor=None,
        theta_norm=True,
        norm_momentum=0.01,
        lr=None,
        weight_decay=0.0,
        ema_epochs=3.0,
        lr_decay_factor=0.5,
        lr_patience=10,
        early_stop_patience=20,
        validation_fraction=0.1,
        use_best_models=True,
        max_epochs=200,
        batch_size=None,
        num_proposals=4,
        proposal_mixture_beta=0.5,
        gamma=0.5,
        marginal="auto",
        store_capacity=None,
        discard_log_ratio=None,
        nan_policy="drop",
        device="auto",
        max_cache_samples=None,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.prior = prior
        self.marginalize = marginalize
        self.net_type = net_type
        self.num_transforms = num_transforms
        self.hidden_features = hidden_features
        self.num_bins = num_bins
        self.ensemble_size = ensemble_size
        self.embedding = embedding
        self.embedding_features = embedding_features
        self.embedding_hidden_features = embedding_hidden_features
        self.x_preprocessor = x_preprocessor
        self.theta_norm = theta_norm
        self.norm_momentum = norm_momentum
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_epochs = ema_epochs
        self.lr_decay_factor = lr_decay_factor
        self.lr_patience = lr_patience
        self.early_stop_patience = early_stop_patience
        self.validation_fraction = validation_fraction
        self.use_best_models = use_best_models
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.num_proposals = num_proposals
        self.proposal_mixture_beta = proposal_mixture_beta
        self.gamma = gamma
        self.marginal = marginal
        self.store_capacity = store_capacity
        self.discard_log_ratio = discard_log_ratio
        self.nan_policy = nan_policy
        self.device = device
        self.max_cache_samples = max_cache_samples
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ scikit-learn glue

    def __repr__(self, N_CHAR_MAX=700):
        # A scipy prior shows as its distribution and arguments, not an object address.
        shown = type(self)(**{**self.get_params(deep=False), "prior": readable_prior(self.prior)})
        return BaseEstimator.__repr__(shown, N_CHAR_MAX)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        tags.input_tags.allow_nan = False
        return tags

    def _validated_params(self) -> FlowPosteriorParams:
        return validate_params(self.get_params(deep=False), type(self).__name__)

    def _inference_settings(self) -> tuple[SamplerConfig, float]:
        params = validate_params(
            {name: getattr(self, name) for name in _INFERENCE_PARAMS}, type(self).__name__
        )
        return SamplerConfig(params.num_proposals, params.proposal_mixture_beta), params.gamma

    def __getstate__(self):
        return saved_state(super().__getstate__())

    def __setstate__(self, state):
        super().__setstate__(restore_state(state))

    def __deepcopy__(self, memo):
        # Unlike a pickle, a copy in memory keeps the sample store (immutable: shared), so
        # that the copy's partial_fit continues from the same rows.
        copied = self.__class__.__new__(self.__class__)
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            setattr(copied, name, value if name == "_store" else copy.deepcopy(value, memo))
        return copied

    # ------------------------------------------------------------------ fitted state

    @property
    def prior_(self):
        space = self.parameter_space_
        return space if space.is_prior else None

    def _inferred_columns(self) -> np.ndarray:
        space = self.parameter_space_
        return space.inferred_mask if space.is_prior else np.ones(space.n_parameters, bool)

    @property
    def n_parameters_(self) -> int:
        return self.parameter_space_.n_inferred

    @property
    def net_type_(self) -> str:
        return self.network_.spec.net_type

    @property
    def marginal_(self):
        kind = self.network_.marginal_policy.kind
        return None if kind == "none" else kind

    @property
    def prior_fraction_(self):
        return self.network_.marginal_policy.prior_fraction

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
        return self._fit(X, y, None, params, warm=warm, keep_store=False)

    def partial_fit(self, X, y, theta_log_prob=None, *, max_epochs=None, reset_network=False):
        """Add simulations to the sample store and continue training on the whole store.

        The first call initialises the estimator as ``fit`` does, fitting ``x_preprocessor``
        on its ``x``; later calls keep that fitted preprocessor (refitting it would change
        the representation the networks learned). Each call is a round:

        1. the new rows join the store, split once into training and validation rows
           (``validation_fraction``); validation rows stay validation rows in later rounds;
        2. beyond ``store_capacity`` the oldest rows are dropped;
        3. with ``discard_log_ratio``, rows whose log-ratio against their proposal is
           below it are dropped;
        4. training continues from the current networks for up to ``max_epochs`` with
           early stopping on the store's validation rows. ``history_`` grows across calls.

        Unlike ``MLPRegressor.partial_fit`` (one pass), a call trains to convergence, as a
        simulation round needs. A round that fails or diverges leaves the estimator, its
        networks and its store as they were. The store is not pickled: after loading, the
        next call starts a store with its own rows.

        Parameters
        ----------
        X : array-like of shape (n_simulations, n_parameters)
            Parameters ``theta``.
        y : array-like or dict
            Simulated observations ``x``, as in :meth:`fit`.
        theta_log_prob : array-like of shape (n_simulations,), default=None
            Log-density, in ``theta`` space, of the distribution each row was drawn from,
            over the inferred, non-fixed parameters (marginalized ones are drawn from their
            prior and do not enter): what ``sample_proposal(..., return_log_prob=True)``
            returns. ``None`` means the rows were drawn from the prior.
        max_epochs : int, default=None
            The most epochs of this round; ``None`` uses the hyperparameter.
        reset_network : bool, default=False
            Re-initialise the networks before this round instead of continuing from the
            current weights (Falcon's ``reset_network_after_pause``); with
            ``net_type="auto"`` the family is chosen again.

        Returns
        -------
        self : FlowPosteriorEstimator
        """
        params = self._validated_params()
        if max_epochs is not None:
            max_epochs = check_positive_int(max_epochs, "max_epochs")
        return self._fit(
            X,
            y,
            theta_log_prob,
            params,
            warm=hasattr(self, "network_"),
            keep_store=True,
            max_epochs=max_epochs,
            reset_network=bool(reset_network),
        )

    def _fit(
        self,
        X,
        y,
        theta_log_prob,
        params,
        *,
        warm,
        keep_store,
        max_epochs=None,
        reset_network=False,
    ):
        # validate -> map -> store -> train -> assign; nothing is assigned before the end.
        device = resolve_device(params.device)
        theta, x, keep, features = check_training_data(
            self,
            X,
            y,
            params.nan_policy,
            reset=not warm,
            observation_shape=self.observation_shape_ if warm else None,
        )
        names = features[2] if not warm else getattr(self, "observation_names_in_", None)
        preprocessor, x_net, net_shape = preprocess_training(
            self.x_preprocessor_ if warm else params.x_preprocessor,
            x,
            names,
            observation_shape_of(y),
            params.embedding,
            refit=not warm,
        )
        space = self.parameter_space_ if warm else _parameter_space(params, theta)
        log_prob = check_theta_log_prob(theta_log_prob, len(keep), space.is_prior)
        rows = to_training_rows(space, theta, None if log_prob is None else log_prob[keep])
        previous = getattr(self, "_store", None) if warm and keep_store else None
        store, seed, x_scaling, n_discarded = self._next_store(previous, rows, x_net, params, warm)
        policy = choose_marginal(space.is_prior, store.prior_fraction(), params.marginal)
        config = params.training_config(max_epochs)
        network, result, validation_losses = _train_families(
            self.network_ if warm else None,
            (params, space, x_net, net_shape),
            (store, policy, config, device),
            seed=seed,
            offset=len(self.history_) if warm else 0,
            reset=reset_network,
        )
        if result.interrupted and not result.history:
            # Nothing was learned: the estimator stays as it was, fitted or not.
            raise KeyboardInterrupt
        report_fit(result, config.max_epochs, len(store), policy)
        x_reference = fit_reference(store.x.reshape(len(store), -1).numpy(), seed)

        if not warm:
            self._set_features(*features)
        self.parameter_space_ = space
        self.x_preprocessor_ = preprocessor
        self.x_shift_, self.x_scale_ = x_scaling
        self.n_observation_features_ = x.shape[1]
        self.observation_shape_ = observation_shape_of(y)
        self.device_ = device
        self.network_ = network
        self.validation_losses_ = validation_losses
        self._store = store
        self.x_reference_ = x_reference
        self._log_z = LogNormalizerCache(seed, params.proposal_mixture_beta)
        self.n_stored_simulations_ = len(store)
        self.n_discarded_simulations_ = n_discarded
        self.history_ = (self.history_ if warm else []) + result.history
        self.n_iter_ = len(self.history_)
        self.best_epoch_ = result.best_epoch
        self.n_dropped_simulations_ = int((~keep).sum())
        self.n_skipped_steps_ = result.n_skipped_steps
        self.interrupted_ = result.interrupted
        return self

    def _set_features(self, n_features: int, theta_names, x_names) -> None:
        self.n_features_in_ = n_features
        for attribute, names in (
            ("feature_names_in_", theta_names),
            ("observation_names_in_", x_names),
        ):
            if names is not None:
                setattr(self, attribute, names)
            elif hasattr(self, attribute):
                delattr(self, attribute)

    def _next_store(self, previous: SampleStore | None, rows, x: np.ndarray, params, warm):
        """The store of this round, its seed, the scaling of ``x`` and the rows discarded.

        The new rows join ``previous`` (or a new store) as the next round, split by the
        round's seed; ``x`` is standardized in float64 (by the training rows' statistics
        at the first fit) before the float32 cast; then the capacity and, for a later
        round, the discard rule apply.
        """
        store = previous or SampleStore.empty(rows.u.shape[1], x.shape[1:])
        seed = round_seed(params.random_state, store.next_round)
        split = validation_mask(
            len(x), params.validation_fraction, torch.Generator().manual_seed(seed)
        )
        # Statistics of the training rows only, as the running normalisations keep them.
        scaling = (self.x_shift_, self.x_scale_) if warm else _feature_scaling(x[~split.numpy()])
        store = store.append(
            torch.as_tensor(rows.u, dtype=torch.float32),
            torch.as_tensor(_standardized(x, *scaling), dtype=torch.float32),
            torch.as_tensor(rows.log_proposal),
            torch.as_tensor(rows.from_prior),
            split,
        ).limit(params.store_capacity, params.validation_fraction)
        if not previous:
            return store, seed, scaling, 0
        store, n_discarded = _discard(self.network_, self.device_, store, params)
        return store, seed, scaling, n_discarded

    # ------------------------------------------------------------------ inference

    def _check_observations(self, x, name="x", batch=False) -> tuple[np.ndarray, bool]:
        """Observations as flat float64 rows ``(m, D)`` and whether a single one was given."""
        if x is None:
            raise ValueError(f"{name} is None; expected an array of numbers.")
        check_names(x, name, type(self).__name__, getattr(self, "observation_names_in_", None))
        x = as_array_input(x)
        if np.ndim(x) == 0 and self.observation_shape_ == (1,):
            x = np.reshape(x, (1,))  # a number is one observation of a one-feature model
        with named_errors(name):
            x2d, single = flatten_observations(
                x, self.observation_shape_, name=name, owner=type(self).__name__, batch=batch
            )
        check_magnitude(x2d, name)
        names = getattr(self, "observation_names_in_", None)
        x2d = transform_observations(getattr(self, "x_preprocessor_", None), x2d, names, name)
        return x2d, single

    def _x_tensor(self, x2d: np.ndarray) -> torch.Tensor:
        """Flat observations standardized in float64, then as float32 on the device."""
        x = _standardized(x2d, self.x_shift_, self.x_scale_)
        return torch.as_tensor(x, dtype=torch.float32).to(self.device_)

    def _summaries(self, x2d: np.ndarray) -> torch.Tensor:
        return self.network_.embed(self._x_tensor(x2d))

    def _seed(self, random_state) -> int:
        with named_errors("random_state"):
            return draw_seed(self.random_state if random_state is None else random_state)

    def _draw(self, x2d: np.ndarray, n: int, sampler, exponent: float, seed: int, densities=True):
        """``sample_posterior`` of the target with ``exponent`` for flat observations
        (``densities=False``: an ensemble skips its mixture log-densities, and a
        flow-matching flow drawn from :math:`q` alone, without importance sampling, the
        divergence of its ODE).

        One generator per call, on the networks' device: torch's global random state is
        never used, so concurrent calls cannot change each other's draws.
        """
        generator = torch.Generator(device=self.device_).manual_seed(seed)
        with torch.no_grad(), InferenceProgress(len(x2d), "sample", self.verbose) as progress:
            return sample_posterior(
                self.network_,
                self._summaries(x2d),
                n,
                sampler,
                self.device_,
                exponent=exponent,
                generator=generator,
                progress=progress,
                with_log_density=densities,
            )

    def sample(self, x, n_samples, *, random_state=None, return_ess=False, as_frame=False):
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
            observation (``n_samples`` where sampling is exact).
        as_frame : bool, default=False
            Return a pandas DataFrame whose columns name the parameters (see Returns).

        Returns
        -------
        theta : ndarray or DataFrame
            Posterior samples, float64, of shape ``(n_samples, n_parameters)`` for one
            observation or ``(n_observations, n_samples, n_parameters)`` for several. With
            ``as_frame``, a DataFrame with one column per inferred parameter, named by
            ``feature_names_in_`` or else ``theta{i}`` (``i`` the column of ``theta``), and
            one row per draw: indexed by ``draw`` for one observation, by the MultiIndex
            ``(observation, draw)`` for several (``observation`` is the index of a
            DataFrame ``x``, otherwise ``0..n_observations-1``).
        ess : float or ndarray of shape (n_observations,)
            Only with ``return_ess``. A warning is emitted when it is below ``n_samples``.

        Raises
        ------
        ValueError
            If the output alone would take more than ``MAX_SAMPLE_BYTES`` (a quarter of
            the machine's memory, at most 8 GiB), before any work is done.
        """
        check_is_fitted(self, "network_")
        n_samples = check_positive_int(n_samples, "n_samples")
        sampler, _ = self._inference_settings()
        x2d, single = self._check_observations(x)
        warn_if_misspecified(self, x2d)
        _check_output_size(len(x2d), n_samples, self.n_parameters_)
        u, ess, _ = self._draw(
            x2d, n_samples, sampler, 1.0, self._seed(random_state), densities=False
        )
        theta = self.parameter_space_.u_to_theta(u.to("cpu", torch.float64).numpy())
        ess = ess.cpu().numpy().astype(np.float64)
        _warn_low_ess(ess, n_samples)
        if single:
            theta, ess = theta[0], float(ess[0])
        names = parameter_names(getattr(self, "feature_names_in_", None), self._inferred_columns())
        theta = samples_frame(theta, names, as_frame, x)
        return (theta, ess) if return_ess else theta

    def log_prob(self, theta, x):
        r"""Normalized posterior log-density :math:`\log p(\theta \mid x)` in ``theta`` space.

        :math:`\log q(u \mid x) - \log m(u) - \log Z(x) + \log |\partial u / \partial \theta|`,
        with :math:`Z(x)` exact for the exact prior marginal and otherwise estimated by
        importance sampling once per observation and cached. ``-inf`` outside the prior's
        support.

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
        warn_if_misspecified(self, x2d)
        return self._log_prob(theta, x2d)

    def _log_prob(self, theta, x2d: np.ndarray) -> np.ndarray:
        names = getattr(self, "feature_names_in_", None)
        inferred = None if names is None else names[self._inferred_columns()]
        check_names(theta, "theta", type(self).__name__, names, inferred)
        theta = to_float_array(as_array_input(theta), "theta")
        given_shape = theta.shape
        theta = theta[None, :] if theta.ndim == 1 else theta
        allowed = {self.n_parameters_, self.n_features_in_}
        if theta.ndim != 2 or theta.shape[1] not in allowed:
            raise ValueError(
                f"theta has shape {given_shape}; expected (n, {self.n_parameters_})"
                + (f" or (n, {self.n_features_in_})" if len(allowed) > 1 else "")
                + "."
            )
        if len(x2d) != len(theta) and len(x2d) != 1:
            raise ValueError(
                f"x has {len(x2d)} observations but theta has {len(theta)} rows; pass one "
                "observation, or one per row of theta."
            )
        u, log_jac, support = self.parameter_space_.theta_to_u(theta)
        unique_x, inverse = unique_rows(x2d)
        if len(x2d) == 1:  # one observation for every row of theta
            inverse = np.zeros(len(theta), dtype=np.intp)
        with torch.no_grad():
            u_t = torch.as_tensor(u, dtype=torch.float32).to(self.device_)
            index = torch.as_tensor(inverse).to(self.device_)
            log_z = None
            if self.parameter_space_.is_prior:
                log_z = torch.as_tensor(self._log_normalizers(unique_x)[0])
            summaries, log_jac = self._summaries(unique_x), torch.as_tensor(log_jac)
            log_p = log_posterior(
                self.network_, u_t, summaries, index, log_z, self.device_, log_jac
            )
        return np.where(support, log_p.numpy(), -np.inf)

    def _log_normalizers(self, unique_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log Z of distinct observations and its standard error; warns where it is above
        the tolerance."""
        with InferenceProgress(len(unique_x), "log Z", self.verbose) as progress:
            log_z, se = self._log_z.get(
                self.network_,
                self._x_tensor(unique_x),
                [row.tobytes() for row in unique_x],
                self.device_,
                progress=progress,
            )
        se = se.numpy()
        worst = se.reshape(len(se), -1).max(axis=1)  # per observation, over ensemble members
        if (worst > self._log_z.tolerance).any():
            warnings.warn(
                f"log Z(x), the normalizing constant of log_prob, is known only to within "
                f"{worst.max():.3f} nats (standard error) for {int((worst > self._log_z.tolerance).sum())} "
                f"of {len(se)} observation(s), above the tolerance of {self._log_z.tolerance} "
                f"after {self._log_z.max_candidates} candidates: q/m is heavy-tailed there. "
                "log_prob is off by about that much; train longer or with more simulations.",
                UserWarning,
                stacklevel=4,
            )
        return log_z.numpy(), se

    def log_normalizer(self, x) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`\log Z(x)`, the normalizing constant :meth:`log_prob` subtracts, and its
        standard error.

        With the exact prior as :math:`m` it is :math:`d \log(2b)` exactly (error 0);
        otherwise an importance-sampling estimate whose standard error is brought below
        0.005 nats where :math:`2^{18}` candidates suffice (a warning says when not), cached
        per observation. Without a prior, :math:`q` is normalized and the constant is 0.

        Parameters
        ----------
        x : array-like
            One observation or several, as in :meth:`sample`.

        Returns
        -------
        log_z, standard_error : ndarray of shape (n_observations,)
            Of shape ``(n_observations, ensemble_size)`` for an ensemble with a prior: the
            constant :math:`Z_k(x)` of each member, by which its posterior is normalized
            before the members are averaged.
        """
        check_is_fitted(self, "network_")
        x2d, _ = self._check_observations(x)
        warn_if_misspecified(self, x2d)
        if not self.parameter_space_.is_prior:
            return np.zeros(len(x2d)), np.zeros(len(x2d))
        with torch.no_grad():
            return self._log_normalizers(x2d)

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
        n_samples = check_positive_int(n_samples, "n_samples")
        fitted = hasattr(self, "network_")
        params = None if fitted else self._validated_params()
        prior = self.prior_ if fitted else (params.prior and _parameter_space(params, None))
        if prior is None:
            raise ValueError(
                "sample_proposal needs a prior: the estimator was built with prior=None, so "
                "it cannot tell the prior apart from the training distribution. Pass "
                "prior=[...] to the estimator."
            )
        seed = self._seed(random_state)
        if not fitted:
            theta = prior.sample(n_samples, seed)
            log_prob = prior.log_prob(theta[:, prior.inferred_mask])  # as partial_fit takes it
            return (theta, log_prob) if return_log_prob else theta
        x2d, _ = self._check_observations(x)
        if x2d.shape[0] != 1:
            raise ValueError(
                f"x must be one observation of shape {self.observation_shape_}, got "
                f"{x2d.shape[0]} observations."
            )
        sampler, gamma = self._inference_settings()
        u, _, log_density = self._draw(x2d, n_samples, sampler, 1.0 - gamma, seed)
        theta = prior.complete(u[0].to("cpu", torch.float64).numpy(), seed)
        log_prob = log_density[0].to("cpu", torch.float64).numpy() + prior.theta_to_u(theta)[1]
        return (theta, log_prob) if return_log_prob else theta


def _discard(network, device, store: SampleStore, params) -> tuple[SampleStore, int]:
    """Drop the stored rows implausible under the current posterior estimate ``network``."""
    if params.discard_log_ratio is None:
        return store, 0
    kept = log_ratio_to_proposal(network, store, device) >= params.discard_log_ratio
    if not bool((kept & ~store.is_validation).any()):
        raise ValueError(
            f"discard_log_ratio={params.discard_log_ratio} would drop all "
            f"{int((~store.is_validation).sum())} training rows (every log-ratio is below "
            "it); lower it or set discard_log_ratio=None. The estimator was left as it was."
        )
    return store.select(kept, filters_prior_rows=True), int((~kept).sum())


def _round_network(current, data, reset: bool, net_type):
    """The network a round trains (``data`` is ``(params, space, x, shape)``): new of the
    family ``net_type`` without a ``current`` one; else a copy of it (so that a failed or
    interrupted round leaves the fitted model intact), or with ``reset`` new from its spec,
    of the family ``net_type`` when given."""
    params, space, x, shape = data
    if current is None:
        return _network_spec(params, space, x, shape, net_type).build()
    if not reset:
        return copy.deepcopy(current)
    if net_type is None:
        return current.spec.build()
    return dataclasses.replace(current.spec, **_family_fields(params, net_type)).build()


def _family_fields(params, net_type: str) -> dict:
    """The spec fields of the family ``net_type``: its name, transforms and widths."""
    return {
        "net_type": net_type,
        "num_transforms": default_num_transforms(net_type, params.num_transforms),
        "hidden_features": default_hidden_features(net_type, params.hidden_features),
    }


def _families(params, store, warm: bool, reset: bool) -> tuple:
    """The flow families a fit trains: ``None`` (the current network's) for a warm round
    that continues or with a set ``net_type``; for ``net_type="auto"`` on new networks
    :data:`~skfalcon.engine.AUTO_FAMILIES`, or its first without validation rows to
    choose by."""
    if params.net_type != "auto":
        return (None,) if warm else (params.net_type,)
    if warm and not reset:
        return (None,)
    return AUTO_FAMILIES if bool(store.is_validation.any()) else AUTO_FAMILIES[:1]


def _train_families(current, data, training, *, seed: int, offset: int, reset: bool):
    """Train a network of each family :func:`_families` names from the round's ``seed`` and
    keep the one whose posterior flow reads the least validation loss. ``current`` is the
    fitted network of a warm round (else ``None``) and ``data`` ``(params, space, x,
    shape)``, as :func:`_round_network` takes them; ``training`` is ``(store, policy,
    config, device)``.

    Returns that network, its training result and each trained family's loss. A family
    whose training diverges is passed over while another trains; an interrupt ends the
    search with the networks trained so far, and the result kept says it was interrupted.
    """
    params = data[0]
    store, policy, config, device = training
    families = _families(params, store, current is not None, reset)
    trained, failures = {}, []
    for family in families:
        with torch_seed_scope(seed, device):
            network = _round_network(current, data, reset, family)
            network.set_marginal_policy(policy)
            try:
                result = _train(network, store, config, device, params, offset)
            except TrainingDivergedError as exc:
                failures.append(f"{family}: {exc}" if len(families) > 1 else str(exc))
                continue
        trained[network.spec.net_type] = (network, result)
        if result.interrupted:
            break
    if not trained:
        raise RuntimeError(
            f"Training diverged: {'; '.join(failures)}. Lower lr, raise batch_size, or check "
            "x and theta for extreme values; the estimator was left as it was before this call."
        )
    losses = {family: _validation_loss(result) for family, (_, result) in trained.items()}
    network, result = trained[min(losses, key=losses.get)]
    interrupted = any(r.interrupted for _, r in trained.values())
    return network, dataclasses.replace(result, interrupted=interrupted), losses


def _validation_loss(result) -> float:
    """The posterior flow's validation loss at the best epoch (inf without one)."""
    for record in result.history:
        if record["epoch"] == result.best_epoch and record["val_loss_conditional"] is not None:
            return float(record["val_loss_conditional"])
    return math.inf


def _train(network, store, config, device, params, epoch_offset: int):
    """Train with a progress bar when ``verbose``."""
    progress = FitProgress(config.max_epochs) if params.verbose else None
    try:
        return train(
            network, store, config, device, on_epoch_end=progress, epoch_offset=epoch_offset
        )
    finally:
        if progress is not None:
            progress.close()


def _check_output_size(n_observations: int, n_samples: int, n_parameters: int) -> None:
    """Refuse a draw whose float64 output alone exceeds :data:`MAX_SAMPLE_BYTES`."""
    size = n_observations * n_samples * n_parameters * 8
    if size > MAX_SAMPLE_BYTES:
        raise ValueError(
            f"sample would return {size / 2**30:.1f} GiB ({n_observations} observation(s) x "
            f"{n_samples} samples x {n_parameters} parameters in float64), above the limit "
            f"of {MAX_SAMPLE_BYTES / 2**30:.1f} GiB (a quarter of this machine's memory, at "
            "most 8 GiB); draw fewer samples per call, or the observations in batches."
        )


def _feature_scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each flat feature of the training ``x``, in float64
    (1 where a feature is constant), so that no offset is lost to the float32 cast."""
    shift = x.mean(axis=0)
    spread = x.std(axis=0)
    return shift, np.where(spread > 0, spread, 1.0)


def _standardized(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (np.asarray(x, dtype=np.float64) - shift) / scale


def _parameter_space(params, theta):
    """The prior of ``params``, or a standardizer fitted to ``theta`` for ``prior=None``."""
    if params.prior is None:
        return Standardizer.fit(theta)
    prior = make_prior(params.prior, marginalize=params.marginalize)
    if theta is not None and theta.shape[1] != prior.n_parameters:
        raise ValueError(
            f"theta has {theta.shape[1]} columns but the prior has {prior.n_parameters} parameters."
        )
    if prior.n_free == 0:
        raise ValueError(
            f"The prior leaves nothing to infer: of its {prior.n_parameters} parameters, "
            f"{int(prior.fixed_mask.sum())} are fixed and {int(prior.marginalized_mask.sum())} "
            f"marginalized (marginalize={params.marginalize!r}); at least one must be neither."
        )
    return prior


def _network_spec(params, space, x: np.ndarray, shape, net_type: str) -> NetworkSpec:
    """The spec of new dual flows of the family ``net_type`` for these hyperparameters and
    training data."""
    return NetworkSpec(
        features=space.n_free,
        observation_features=x.shape[1],
        embedding=embedding_spec(params, shape),
        marginal=space.is_prior,
        **_family_fields(params, net_type),
        num_bins=params.num_bins,
        ensemble_size=params.ensemble_size,
        theta_norm=params.theta_norm,
        norm_momentum=params.norm_momentum,
        cube_bound=space.cube_bound,
        vector_field="residual",
    )


def _warn_low_ess(ess: np.ndarray, n_samples: int) -> None:
    low = ess < n_samples
    if low.any():
        warnings.warn(
            f"Low effective sample size: importance sampling found {ess.min():.1f} "
            f"effective candidates for {n_samples} requested samples ({int(low.sum())} of "
            f"{len(ess)} observation(s) below {n_samples}); the samples repeat and may be "
            "inaccurate. Raise num_proposals, or the posterior estimate may be poor for "
            "this observation.",
            UserWarning,
            stacklevel=3,
        )
