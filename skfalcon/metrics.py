"""Metrics that compare posterior samples with reference samples."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_array, check_scalar

__all__ = ["c2st"]


def _check_samples(array, name: str) -> np.ndarray:
    """Validate a 2-D float array of samples with finite values."""
    if np.ndim(array) != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_dims); got shape {np.shape(array)}."
        )
    return check_array(array, dtype=np.float64, input_name=name)


def c2st(X, Y, *, n_folds=5, z_score=True, random_state=0, classifier=None) -> float:
    """Classifier two-sample test: how well a classifier tells ``X`` from ``Y``.

    The samples of ``X`` are labelled 0 and those of ``Y`` 1, and a classifier
    is scored by stratified k-fold cross-validation. The mean held-out
    accuracy is returned: 0.5 when the two samples come from the same
    distribution, 1.0 when they are perfectly separable. This is the C2ST of
    the simulation-based inference benchmarks, where ``X`` holds reference
    posterior samples and ``Y`` the samples of an estimator.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_dims)
        First sample, usually the reference.
    Y : array-like of shape (n_samples_Y, n_dims)
        Second sample, with the same number of columns as ``X``.
    n_folds : int, default=5
        Number of stratified cross-validation folds.
    z_score : bool, default=True
        Whether to standardise both samples with the mean and standard
        deviation of ``X`` before classification.
    random_state : int, RandomState instance or None, default=0
        Seeds the fold shuffling and the default classifier.
    classifier : scikit-learn classifier or None, default=None
        The classifier to cross-validate (it is cloned, never fitted in
        place). ``None`` uses ``MLPClassifier(activation="relu",
        hidden_layer_sizes=(10 * n_dims, 10 * n_dims), max_iter=1000,
        solver="adam", random_state=random_state)``.

    Returns
    -------
    accuracy : float
        Mean cross-validated accuracy, in ``[0, 1]``.

    Notes
    -----
    Use samples of equal size: with ``n_samples_X != n_samples_Y`` the chance
    level is the share of the larger sample, not 0.5. The score fluctuates
    around 0.5 by about ``1 / sqrt(n_samples_X + n_samples_Y)`` for identical
    distributions.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.metrics import c2st
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2))
    >>> c2st(X, X + 5.0) > 0.95
    True
    """
    X = _check_samples(X, "X")
    Y = _check_samples(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of columns; got X with shape {X.shape} "
            f"and Y with shape {Y.shape}."
        )
    check_scalar(n_folds, "n_folds", numbers.Integral, min_val=2)
    if min(len(X), len(Y)) < n_folds:
        raise ValueError(
            f"X and Y need at least n_folds={n_folds} samples each; got {len(X)} and {len(Y)}."
        )

    if z_score:
        scaler = StandardScaler().fit(X)
        X, Y = scaler.transform(X), scaler.transform(Y)
    if classifier is None:
        n_hidden = 10 * X.shape[1]
        classifier = MLPClassifier(
            activation="relu",
            hidden_layer_sizes=(n_hidden, n_hidden),
            max_iter=1000,
            solver="adam",
            random_state=random_state,
        )

    data = np.concatenate([X, Y])
    target = np.concatenate([np.zeros(len(X)), np.ones(len(Y))])
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    scores = cross_val_score(classifier, data, target, cv=folds, scoring="accuracy")
    return float(np.mean(scores))
