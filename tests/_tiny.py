"""A tiny, fast estimator configuration for unit tests; accuracy lives in benchmarks/."""

TINY = dict(
    num_transforms=1,
    hidden_features=(16,),
    num_bins=4,
    max_epochs=3,
    batch_size=64,
    # Three epochs learn little at the square-root-scaled rate of 64 rows (7e-4).
    lr=2e-3,
    num_proposals=4,
    # One network: unit tests check one posterior; ensembles have tests of their own.
    ensemble_size=1,
    # Three epochs are the average's own time constant: these fits use the optimizer's
    # weights. The average has tests of its own (tests/engine/test_training.py).
    ema_epochs=0.0,
    device="cpu",
)
