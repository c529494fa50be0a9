"""The safe file format: JSON and numpy arrays with checksums, never unpickled on load."""

import functools
import hashlib
import json
import pickle
import struct
import zipfile

import joblib
import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.linear_model import LogisticRegression

import skfalcon
from skfalcon import FactorizedPrior, FlowPosteriorEstimator
from skfalcon.engine import CNN1dEmbedding

MEMBERS = ("spec.json", "arrays.npz", "sha256.json")


def _assert_same_posterior(loaded, est, theta, x):
    assert type(loaded) is FlowPosteriorEstimator
    assert repr(loaded.get_params()) == repr(est.get_params())
    np.testing.assert_array_equal(
        loaded.sample(x[0], 16, random_state=0), est.sample(x[0], 16, random_state=0)
    )
    np.testing.assert_array_equal(
        loaded.sample(x[:2], 8, random_state=1), est.sample(x[:2], 8, random_state=1)
    )
    np.testing.assert_array_equal(loaded.log_prob(theta[:5], x[0]), est.log_prob(theta[:5], x[0]))


def _rewrite(path, members, *, checksums=True):
    """Replace ``members`` of a safe file, with fresh checksums unless told otherwise."""
    with zipfile.ZipFile(path) as archive:
        data = {name: archive.read(name) for name in MEMBERS}
    data.update(members)
    if checksums:
        digests = {name: hashlib.sha256(data[name]).hexdigest() for name in MEMBERS[:2]}
        data["sha256.json"] = json.dumps(digests).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in data.items():
            archive.writestr(name, value)


@pytest.mark.parametrize("fixture", ["fitted_moons", "fitted_moons_flow"])
def test_a_fitted_estimator_round_trips_with_identical_samples_and_densities(
    fixture, request, moons_data, tmp_path
):
    est = request.getfixturevalue(fixture)
    task, theta, x = moons_data
    est.log_prob(theta[:5], x[0])  # fills the log Z cache, which must travel too
    path = skfalcon.save(est, tmp_path / "model.skfalcon")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(MEMBERS)
    loaded = skfalcon.load(path)
    assert loaded._log_z == est._log_z
    assert loaded.history_ == est.history_ and loaded.n_iter_ == est.n_iter_
    _assert_same_posterior(loaded, est, theta, x)


@pytest.mark.parametrize(
    "params",
    [
        {"prior": None},
        {"prior": FactorizedPrior([("uniform", -1, 1), scipy.stats.uniform(-1, 2)], marginalize=1)},
        {"prior": [("uniform", -1, 1)] * 2, "embedding": "mlp", "embedding_features": 4},
    ],
    ids=["prior-none", "marginalized-scipy-prior", "preset-embedding"],
)
def test_prior_none_a_marginalized_prior_and_a_preset_round_trip(
    params, moons_data, tiny, tmp_path
):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(random_state=0, **tiny, **params).fit(theta, x)
    loaded = skfalcon.load(skfalcon.save(est, tmp_path / "model.skfalcon"))
    assert repr(loaded.parameter_space_) == repr(est.parameter_space_)
    assert loaded.network_.spec == est.network_.spec
    _assert_same_posterior(loaded, est, theta, x)


def test_unknown_attributes_column_names_and_presets_round_trip(tiny, tmp_path):
    est = FlowPosteriorEstimator(embedding={"a": "mlp", "b": None}, **tiny)
    est.x_shift_ = np.arange(3.0)
    est.feature_names_in_ = np.array(["mass", "spin"], dtype=object)
    est.interrupted_ = False
    est.observation_shape_ = {"a": (2, 3), "b": (4,)}
    loaded = skfalcon.load(skfalcon.save(est, tmp_path / "model.skfalcon"))
    np.testing.assert_array_equal(loaded.x_shift_, est.x_shift_)
    assert loaded.feature_names_in_.dtype == object
    assert loaded.feature_names_in_.tolist() == ["mass", "spin"]
    assert loaded.interrupted_ is False and loaded.observation_shape_ == est.observation_shape_
    assert loaded.embedding == {"a": "mlp", "b": None} and loaded.hidden_features == (16,)


def _member_data_offset(path, name):
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 :][:4])
    return info.header_offset + 30 + name_length + extra_length + info.compress_size // 2


@pytest.mark.parametrize("member", ["spec.json", "arrays.npz"])
def test_a_flipped_byte_raises_a_clear_error(member, fitted_moons, tmp_path):
    path = skfalcon.save(fitted_moons, tmp_path / "model.skfalcon")
    raw = bytearray(path.read_bytes())
    raw[_member_data_offset(path, member)] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"Could not load a skfalcon model from .*damaged"):
        skfalcon.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_file_raises_a_clear_error(keep, fitted_moons, tmp_path):
    path = skfalcon.save(fitted_moons, tmp_path / "model.skfalcon")
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ValueError, match="the file is truncated or damaged"):
        skfalcon.load(path)


def test_an_edited_member_fails_its_checksum(fitted_moons, tmp_path):
    # A valid zip (CRCs recomputed) whose spec.json says something else.
    path = skfalcon.save(fitted_moons, tmp_path / "model.skfalcon")
    with zipfile.ZipFile(path) as archive:
        original = archive.read("spec.json")
    spec = original.replace(b'"num_bins": 4', b'"num_bins": 5')
    assert spec != original
    _rewrite(path, {"spec.json": spec}, checksums=False)
    with pytest.raises(ValueError, match="SHA-256 checksum of spec.json does not match"):
        skfalcon.load(path)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"__type__": "scipy", "name": "binom", "args": [3, 0.5], "kwds": {}}, "not a continuous"),
        ({"__type__": "scipy", "name": "__class__", "args": [], "kwds": {}}, "not a continuous"),
        ({"__type__": "engine", "name": "torch_seed_scope", "fields": {}}, "not a dataclass"),
        ({"__type__": "os.system", "command": "echo hi"}, "unknown entry"),
    ],
)
def test_a_crafted_file_with_good_checksums_builds_nothing_outside_the_format(
    node, message, fitted_moons, tmp_path
):
    path = skfalcon.save(fitted_moons, tmp_path / "model.skfalcon")
    with zipfile.ZipFile(path) as archive:
        spec = json.loads(archive.read("spec.json"))
    spec["state"]["items"]["prior"] = node
    _rewrite(path, {"spec.json": json.dumps(spec).encode()})
    with pytest.raises(ValueError, match=f"not a valid skfalcon model.*{message}"):
        skfalcon.load(path)


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"embedding": torch.nn.Linear(2, 4)}, "estimator.embedding"),
        ({"embedding": {"a": functools.partial(CNN1dEmbedding)}}, "estimator.embedding.a"),
        ({"random_state": np.random.RandomState(0)}, "estimator.random_state"),
    ],
    ids=["module", "callable", "RandomState"],
)
def test_what_the_safe_format_cannot_hold_is_refused_at_save(params, where, tiny, tmp_path):
    est = FlowPosteriorEstimator(**{**tiny, **params})
    path = tmp_path / "model.skfalcon"
    with pytest.raises(ValueError, match=rf"Cannot save {where} \(a .*format='joblib'.*runs code"):
        skfalcon.save(est, path)
    assert not path.exists()
    skfalcon.save(est, tmp_path / "model.joblib")  # joblib still takes it


def test_loading_the_safe_format_never_unpickles(fitted_moons, moons_data, tmp_path, monkeypatch):
    path = skfalcon.save(fitted_moons, tmp_path / "model.skfalcon")

    def refuse(*args, **kwargs):
        raise AssertionError("the safe format was unpickled")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (joblib, "load"),
        (torch, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    loaded = skfalcon.load(path)
    x = moons_data[2]
    np.testing.assert_array_equal(
        loaded.sample(x[0], 8, random_state=0), fitted_moons.sample(x[0], 8, random_state=0)
    )


def test_the_format_follows_the_suffix_unless_given(fitted_moons, tmp_path):
    assert not zipfile.is_zipfile(skfalcon.save(fitted_moons, tmp_path / "a.joblib"))
    assert zipfile.is_zipfile(skfalcon.save(fitted_moons, tmp_path / "a.skfalcon"))
    assert zipfile.is_zipfile(skfalcon.save(fitted_moons, tmp_path / "a.joblib", format="safe"))
    with pytest.raises(ValueError, match="format must be 'safe', 'joblib' or None; got 'npz'"):
        skfalcon.save(fitted_moons, tmp_path / "a.npz", format="npz")


def test_load_refuses_another_estimator_unless_asked_for(tmp_path):
    path = tmp_path / "other.joblib"
    joblib.dump(LogisticRegression(), path)
    with pytest.raises(
        ValueError, match="holds a LogisticRegression, not a FlowPosteriorEstimator"
    ):
        skfalcon.load(path)
    assert isinstance(skfalcon.load(path, expected=LogisticRegression), LogisticRegression)
