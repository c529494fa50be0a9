"""Saving and loading fitted estimators: a safe format for sharing, and joblib.

Two formats, told apart by :func:`load` from the file's first bytes:

- The **safe format** (``format="safe"``, suffix ``.skfalcon``) is a zip archive of three
  members: ``spec.json``, the hyperparameters and fitted state as JSON; ``arrays.npz``, the
  network weights and every fitted array (:func:`numpy.savez`, read back with
  ``allow_pickle=False``); and ``sha256.json``, the SHA-256 digests of both. Loading it
  builds only JSON values, numpy arrays and a fixed set of skfalcon and ``scipy.stats``
  classes: nothing in the file is unpickled, imported or called. Flipped or missing bytes
  raise a ``ValueError`` instead of loading a different model. Share models in this format.
- **joblib** (``format="joblib"``, suffixes ``.joblib``, ``.pkl``, ``.pickle``) is
  :func:`joblib.dump` of the estimator. It stores anything, including custom embedding
  modules and a ``RandomState``, but like every pickle it **runs code when loaded**: load
  joblib files only from sources you trust.

The safe format stores values of these kinds, anywhere in the estimator's state: ``None``,
bools, numbers, strings, lists, tuples, dicts, numpy arrays (numbers, or strings such as
``feature_names_in_``), bytes, a :class:`~skfalcon.priors.FactorizedPrior` (its ``specs``,
``marginalize`` and ``hypercube_bound``), a :class:`~skfalcon.priors.Standardizer`, frozen
continuous ``scipy.stats`` distributions (rebuilt by name from ``scipy.stats`` only), and
the dataclasses exported by :mod:`skfalcon.engine` (network spec, marginal policy, log Z
cache). Anything else, such as an ``nn.Module`` or callable ``embedding``, or an
``x_preprocessor`` (a scikit-learn transformer, fitted or not), is refused at :func:`save`
with a ``ValueError``: save such an estimator with joblib.
"""

import dataclasses
import hashlib
import io
import json
import pickle
import warnings
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import scipy.stats
from scipy.stats.distributions import rv_frozen

from skfalcon import engine
from skfalcon.estimators import FlowPosteriorEstimator
from skfalcon.priors import FactorizedPrior, Standardizer

__all__ = ["load", "save"]

_FORMAT, _FORMAT_VERSION = "skfalcon-safe", 1
_SPEC, _ARRAYS, _CHECKSUMS = "spec.json", "arrays.npz", "sha256.json"
# Every zip archive starts with a local file header; pickles and joblib files never do.
_ZIP_MAGIC = b"PK\x03\x04"
_JOBLIB_SUFFIXES = (".joblib", ".pkl", ".pickle")
_TAG = "__type__"
_SCALARS = (bool, int, float, str)


def save(estimator: FlowPosteriorEstimator, path, *, format=None, compress: int = 3) -> Path:
    """Write ``estimator`` to ``path`` and return the path.

    Parameters
    ----------
    estimator : FlowPosteriorEstimator
        The estimator, fitted or not. ``format="joblib"`` takes any object.
    path : str or path-like
        The file, overwritten if it exists.
    format : {"safe", "joblib"} or None, default=None
        ``"safe"``: JSON and numpy arrays with checksums, which never runs code when
        loaded; the format to share models in. ``"joblib"``: :func:`joblib.dump`, which
        stores anything but runs code when loaded. ``None``: ``"joblib"`` for the suffixes
        ``.joblib``, ``.pkl`` and ``.pickle``, ``"safe"`` otherwise (use ``.skfalcon``).
    compress : int, default=3
        joblib's compression level (``format="joblib"`` only).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``format`` is unknown, or if the safe format cannot hold the estimator (a custom
        embedding module or callable, an ``x_preprocessor``, a ``RandomState``, any other
        Python object); the message names the value, and nothing is written.

    Notes
    -----
    Both formats hold constructor specifications and numpy arrays, not torch storages, so
    a model fitted on a GPU loads on a CPU-only machine. The training data (the sample
    store) is not saved.
    """
    path = Path(path)
    if format is None:
        format = "joblib" if path.suffix.lower() in _JOBLIB_SUFFIXES else "safe"
    if format == "joblib":
        _warn_main_classes(estimator)
        try:
            joblib.dump(estimator, path, compress=compress)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            path.unlink(missing_ok=True)
            raise ValueError(
                f"The estimator holds an object pickle cannot store ({exc}): typically a "
                "lambda or a function defined inside another one, as embedding factory, "
                "prior or FunctionTransformer of x_preprocessor. Define it at module level, "
                "or pass a module instance."
            ) from exc
    elif format == "safe":
        _write_safe(estimator, path)
    else:
        raise ValueError(f"format must be 'safe', 'joblib' or None; got {format!r}")
    return path


def load(path, *, expected: type = FlowPosteriorEstimator):
    """Load an estimator written by :func:`save` or :func:`joblib.dump`.

    The format is detected from the file's first bytes. A safe-format file is rebuilt from
    JSON and numpy arrays and never runs code. **A joblib or pickle file runs code while it
    loads** (that is how pickle rebuilds objects): load one only if you trust where it came
    from; ``expected`` checks the object afterwards and is no protection against that.

    Parameters
    ----------
    path : str or path-like
        The file.
    expected : type, default=FlowPosteriorEstimator
        The class the loaded object must be an instance of. Pass another class to load
        another estimator from a joblib file you trust.

    Returns
    -------
    object
        The estimator, an instance of ``expected``.

    Raises
    ------
    ValueError
        If the file is truncated or damaged (its checksums do not match), not a skfalcon
        safe file nor a joblib/pickle file, or holds something other than ``expected``.
    """
    with open(path, "rb") as file:
        safe = file.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    obj = _read_safe(path) if safe else _read_joblib(path)
    if not isinstance(obj, expected):
        raise ValueError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a {expected.__name__}; to load "
            f"it anyway, pass expected= its class (only for files you trust)."
        )
    return obj


def _read_joblib(path):
    try:
        return joblib.load(path)
    except (AttributeError, ModuleNotFoundError) as exc:
        # pickle stores classes by module and name: one defined in the saving script
        # (__main__) or in a module that is not installed here cannot be found.
        raise ValueError(
            f"Could not load {str(path)!r}: it refers to code this process cannot import "
            f"({exc}). A custom embedding module must be defined in an importable module "
            "(not in a script or notebook's __main__) on both machines; or save with the "
            "safe format, which holds preset embeddings only."
        ) from exc
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(
            f"Could not load a skfalcon model from {str(path)!r}: the file is truncated or "
            f"not a joblib/pickle file ({type(exc).__name__}: {exc or 'unexpected end'})."
        ) from exc


def _warn_main_classes(estimator) -> None:
    """Warn when the pickle will name classes of ``__main__``, which loads nowhere else."""
    modules = getattr(estimator, "embedding", None)
    modules = modules.values() if isinstance(modules, dict) else [modules]
    names = [
        type(m).__qualname__
        for m in modules
        if m is not None and not isinstance(m, str) and type(m).__module__ == "__main__"
    ]
    if names:
        warnings.warn(
            f"The embedding {', '.join(names)} is defined in __main__ (this script or "
            "notebook): the file will load only where that same definition runs first. "
            "Define it in an importable module to load the model elsewhere.",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- the safe format


def _write_safe(estimator, path: Path) -> None:
    """Encode first, so that a value the format cannot hold leaves no file behind."""
    if type(estimator) is not FlowPosteriorEstimator:
        raise ValueError(
            f"The safe format stores a FlowPosteriorEstimator; got a {type(estimator).__name__}. "
            "Save it with format='joblib' (a pickle: loading it runs code)."
        )
    fitted = getattr(estimator, "x_preprocessor_", None)
    preprocessor = getattr(estimator, "x_preprocessor", None) if fitted is None else fitted
    if preprocessor is not None:
        raise ValueError(
            f"Cannot save x_preprocessor={preprocessor!r} in the safe format, which holds no "
            "Python objects so that loading never runs code; a scikit-learn transformer is "
            "one. Save with format='joblib' (a pickle: load it only from trusted sources)."
        )
    encoder = _Encoder()
    spec = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "class": FlowPosteriorEstimator.__name__,
        "state": encoder.encode(estimator.__getstate__(), "estimator"),
    }
    members = {_SPEC: json.dumps(spec, indent=1).encode()}
    buffer = io.BytesIO()
    np.savez(buffer, **encoder.arrays)
    members[_ARRAYS] = buffer.getvalue()
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    members[_CHECKSUMS] = json.dumps(checksums, indent=1).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _read_safe(path) -> FlowPosteriorEstimator:
    members = _checked_members(path)
    try:
        spec = json.loads(members[_SPEC])
        arrays = np.load(io.BytesIO(members[_ARRAYS]), allow_pickle=False)
        _check_header(spec)
        state = _decode(spec["state"], arrays)
        if type(state) is not dict:
            raise ValueError("the state is not a dict")
        estimator = FlowPosteriorEstimator.__new__(FlowPosteriorEstimator)
        estimator.__setstate__(state)
    except (ValueError, LookupError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(
            f"Could not load a skfalcon model from {str(path)!r}: its checksums match but its "
            f"content is not a valid skfalcon model ({type(exc).__name__}: {exc})."
        ) from exc
    return estimator


def _checked_members(path) -> dict:
    """The archive's members, after checking each against its SHA-256 digest."""
    prefix = f"Could not load a skfalcon model from {str(path)!r}:"
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in (_SPEC, _ARRAYS, _CHECKSUMS)}
        checksums = json.loads(members[_CHECKSUMS])
    except (zipfile.BadZipFile, KeyError, EOFError, OSError, zlib.error, ValueError) as exc:
        raise ValueError(
            f"{prefix} the file is truncated or damaged, or not a skfalcon safe-format file "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    for name in (_SPEC, _ARRAYS):
        if (
            type(checksums) is not dict
            or checksums.get(name) != hashlib.sha256(members[name]).hexdigest()
        ):
            raise ValueError(
                f"{prefix} the SHA-256 checksum of {name} does not match: the file was "
                "damaged or altered after it was written."
            )
    return members


def _check_header(spec) -> None:
    if type(spec) is not dict or spec.get("format") != _FORMAT:
        raise ValueError(f"spec.json is not a {_FORMAT} spec")
    if spec.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"the file has format version {spec.get('format_version')!r}; this skfalcon "
            f"reads version {_FORMAT_VERSION} (a newer skfalcon wrote it?)"
        )
    if spec.get("class") != FlowPosteriorEstimator.__name__:
        raise ValueError(f"unknown estimator class {spec.get('class')!r}")


# --------------------------------------------------------------------------- encoding


class _Encoder:
    """JSON of a state tree; numpy arrays and bytes go to ``arrays`` under keys ``a0, a1..``.

    Containers and classes are matched by exact type, not ``isinstance``, so that a subclass
    (with behaviour of its own) is refused rather than silently loaded as its base class.
    """

    def __init__(self):
        self.arrays = {}

    def encode(self, value, path: str):
        """The JSON form of ``value``; ``path`` names it in errors."""
        if value is None or type(value) in _SCALARS:
            return value
        if isinstance(value, np.generic) and type(value.item()) in _SCALARS:
            return value.item()
        if type(value) is list:
            return [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if type(value) is tuple:
            return {_TAG: "tuple", "items": self.encode(list(value), path)}
        if type(value) is dict:
            return self._dict(value, path)
        if type(value) in (np.ndarray, bytes):
            return self._array(value, path)
        if isinstance(value, rv_frozen):
            return self._scipy(value, path)
        return self._object(value, path)

    def _dict(self, value: dict, path: str) -> dict:
        if all(type(key) is str for key in value):
            items = {key: self.encode(item, f"{path}.{key}") for key, item in value.items()}
            return {_TAG: "dict", "items": items}
        # Non-string keys, such as the log Z cache's observation bytes: a list of pairs.
        pairs = [
            [self.encode(key, f"{path} key"), self.encode(item, f"{path}[{key!r:.40}]")]
            for key, item in value.items()
        ]
        return {_TAG: "dict", "pairs": pairs}

    def _array(self, value, path: str) -> dict:
        key = f"a{len(self.arrays)}"
        if type(value) is bytes:
            self.arrays[key] = np.frombuffer(value, dtype=np.uint8)
            return {_TAG: "bytes", "key": key}
        if value.dtype.hasobject:
            # Object arrays would be pickled; string ones (column names) are stored as str.
            if value.dtype != object or not all(type(item) is str for item in value.flat):
                raise _unsafe(path, value)
            self.arrays[key] = value.astype(str)
            return {_TAG: "array", "key": key, "strings": True}
        self.arrays[key] = value
        return {_TAG: "array", "key": key}

    def _scipy(self, value, path: str) -> dict:
        name = value.dist.name
        if type(getattr(scipy.stats, name, None)) is not type(value.dist) or not isinstance(
            value.dist, scipy.stats.rv_continuous
        ):
            raise _unsafe(path, value)
        return {
            _TAG: "scipy",
            "name": name,
            "args": self.encode(list(value.args), f"{path}.args"),
            "kwds": self.encode(dict(value.kwds), f"{path}.kwds"),
        }

    def _object(self, value, path: str) -> dict:
        if type(value) is FactorizedPrior:
            return {
                _TAG: "FactorizedPrior",
                "specs": self.encode(list(value.specs), f"{path}.specs"),
                "marginalize": self.encode(list(value.marginalize), f"{path}.marginalize"),
                "hypercube_bound": self.encode(value.hypercube_bound, path),
            }
        if type(value) is Standardizer:
            shift, scale = self.encode(value.shift, path), self.encode(value.scale, path)
            return {_TAG: "Standardizer", "shift": shift, "scale": scale}
        if _engine_dataclass(type(value).__name__) is type(value):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
            return {
                _TAG: "engine",
                "name": type(value).__name__,
                "fields": self.encode(fields, path),
            }
        raise _unsafe(path, value)


def _unsafe(path: str, value) -> ValueError:
    kind = type(value).__module__ + "." + type(value).__qualname__
    return ValueError(
        f"Cannot save {path} (a {kind}) in the safe format, which holds only JSON values, "
        "numpy arrays, priors, frozen scipy.stats distributions and preset embeddings, so "
        "that loading it never runs code. A custom nn.Module or callable embedding, or a "
        "RandomState random_state, needs format='joblib' (or an int random_state); a joblib "
        "file is a pickle and runs code when loaded, so load it only from trusted sources."
    )


def _engine_dataclass(name):
    """The dataclass ``skfalcon.engine.<name>`` if the engine exports one by that name."""
    cls = getattr(engine, name, None) if name in engine.__all__ else None
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


# --------------------------------------------------------------------------- decoding


def _decode(node, arrays):
    """The value of a JSON node written by :class:`_Encoder`; unknown nodes raise."""
    if node is None or type(node) in _SCALARS:
        return node
    if type(node) is list:
        return [_decode(item, arrays) for item in node]
    decoder = _DECODERS.get(node.get(_TAG)) if type(node) is dict else None
    if decoder is None:
        raise ValueError(f"unknown entry {json.dumps(node)[:80]}")
    return decoder(node, arrays)


def _decode_dict(node, arrays) -> dict:
    if "items" in node:
        return {key: _decode(item, arrays) for key, item in node["items"].items()}
    return {_decode(key, arrays): _decode(item, arrays) for key, item in node["pairs"]}


def _decode_array(node, arrays) -> np.ndarray:
    array = arrays[node["key"]]
    return array.astype(object) if node.get("strings") else array


def _decode_scipy(node, arrays):
    # Only a continuous distribution that scipy.stats itself defines under that name.
    dist = getattr(scipy.stats, node["name"], None) if type(node["name"]) is str else None
    if not isinstance(dist, scipy.stats.rv_continuous):
        raise ValueError(f"{node['name']!r} is not a continuous scipy.stats distribution")
    return dist(*_decode(node["args"], arrays), **_decode(node["kwds"], arrays))


def _decode_prior(node, arrays) -> FactorizedPrior:
    return FactorizedPrior(
        _decode(node["specs"], arrays),
        marginalize=_decode(node["marginalize"], arrays),
        hypercube_bound=_decode(node["hypercube_bound"], arrays),
    )


def _decode_engine(node, arrays):
    cls = _engine_dataclass(node["name"])
    if cls is None:
        raise ValueError(f"{node['name']!r} is not a dataclass of skfalcon.engine")
    return cls(**_decode(node["fields"], arrays))


def _decode_tuple(node, arrays) -> tuple:
    return tuple(_decode(node["items"], arrays))


def _decode_bytes(node, arrays) -> bytes:
    return arrays[node["key"]].tobytes()


def _decode_standardizer(node, arrays) -> Standardizer:
    return Standardizer(_decode(node["shift"], arrays), _decode(node["scale"], arrays))


_DECODERS = {
    "tuple": _decode_tuple,
    "dict": _decode_dict,
    "array": _decode_array,
    "bytes": _decode_bytes,
    "scipy": _decode_scipy,
    "FactorizedPrior": _decode_prior,
    "Standardizer": _decode_standardizer,
    "engine": _decode_engine,
}
