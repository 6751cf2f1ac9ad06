"""Read ``torch.save`` files that hold objects of classes not installed here, without running code.

A training checkpoint of another tool (mmagic 1.x / mmengine: ``message_hub`` holds mmengine
``HistoryBuffer`` objects) is refused by ``torch.load(weights_only=True)``, and a plain unpickler
would import mmengine and call whatever the file names. This reader builds tensors (with the
rebuild functions that weights-only loading allows), containers, and numpy arrays, dtypes and
scalars; an object of any other class becomes an inert ``Placeholder`` that records the class's
name and what the pickle gave it. Nothing else is ever called: a pickle that names a function, or
anything of the standard library, torch or numpy beyond those (``os.system``, ``builtins.eval``,
``subprocess.Popen``, ``functools.partial``...), is refused with ``RefusedGlobal``.

Only the zip format (``torch.save`` since PyTorch 1.6, mmengine's files) is read. Tensors are
loaded onto the CPU.
"""

import _compat_pickle
import collections
import functools
import inspect
import os
import pickle
import re
import sys
import zipfile
from typing import Any

import numpy as np
import torch


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a function or a class this reader will not use: it could run code."""

    def __init__(self, name: str):
        super().__init__(f"refused global {name}")
        self.name = name


class RefusedRecord(pickle.UnpicklingError):
    """A record of the zip archive is not stored as torch.save stores it (see check_records)."""


class Placeholder:
    """An object of a class that was not loaded: the class's ``module`` and ``name``, and what the
    pickle gave it (constructor ``args``/``kwargs``, ``state``, ``items`` and ``elements``)."""

    module = name = ""  # set on each placeholder class

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items, self.elements = args, kwargs, None, {}, []
        return self

    def __init__(self, *args, **kwargs):
        pass  # __new__ recorded the arguments

    def __setstate__(self, state):
        self.state = state

    # dict and list subclasses (mmengine's ConfigDict...) are pickled with their items.
    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<{self.module}.{self.name}, not loaded>"


# Globals of these packages are refused unless allowed below: where functions that act live.
# (Python 2 pickles name the standard library by its old names: __builtin__, copy_reg...)
_REFUSED_PACKAGES = frozenset(sys.stdlib_module_names) | set(_compat_pickle.IMPORT_MAPPING) | {
    "torch", "numpy"}
# A class stands for data; a function (lower-case name, or a method: "Path.touch") only ever
# appears in a pickle to be called.
_CLASS_NAME = re.compile(r"_*[A-Z][A-Za-z0-9_]*")


# numpy's own pickling trusts its input: numpy.ndarray(shape, object, buffer) makes objects of
# raw bytes, and a dtype's pickled state can say that an object dtype holds no objects. So the
# pickle gets ndarray only as a marker for _reconstruct, and dtypes only as numpy builds them.
class _NdarrayMarker:
    def __call__(self, *args, **kwargs):
        raise RefusedGlobal("numpy.ndarray")


_NDARRAY = _NdarrayMarker()


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("numpy arrays are rebuilt as numpy.ndarray only")
    return np.zeros(0).__reduce__()[0](np.ndarray, shape, dtype)  # then BUILD sets its state


def _dtype(spec, align=False, copy=True):
    return np.dtype(spec, align, True)  # a new object: never numpy's shared ones


@functools.cache
def _allowed_globals() -> dict[str, Any]:
    # The globals torch.load(weights_only=True) allows: tensor and parameter rebuild functions,
    # dtypes, storage types, OrderedDict, Counter, set, bytearray, bytes (_codecs.encode)...
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = dict(_get_allowed_globals())
    scalar = np.float64(0).__reduce__()[0]  # refuses object dtypes itself
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x, 2.x files
        allowed[f"{module}._reconstruct"] = _reconstruct
        allowed[f"{module}.scalar"] = scalar
    allowed["numpy.ndarray"] = _NDARRAY
    allowed["numpy.dtype"] = _dtype
    return allowed


# Objects whose state a pickle may set (BUILD): only ones this load created.
_BUILDABLE = (Placeholder, torch.Tensor, collections.OrderedDict, np.ndarray, np.dtype)


class Unpickler(pickle._Unpickler):
    """The pure-Python unpickler (so that BUILD can be checked) with a restricted ``find_class``.

    ``read_storage(key, dtype, numel)`` returns the storage that a persistent id names.
    """

    def __init__(self, file, read_storage):
        super().__init__(file, encoding="utf-8")
        self._read_storage = read_storage
        self._storages: dict[str, torch.storage.TypedStorage] = {}
        self._placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle.Unpickler maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            else:
                module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        module = {"torch.tensor": "torch._tensor"}.get(module, module)  # renamed in PyTorch 1.8
        allowed = _allowed_globals().get(f"{module}.{name}")
        if allowed is not None:
            return allowed
        if module.partition(".")[0] in _REFUSED_PACKAGES or not _CLASS_NAME.fullmatch(name):
            full = f"{module}.{name}"
            if not could_exist(full):
                raise pickle.UnpicklingError(f"no such global {full!r}: the file is corrupt")
            raise RefusedGlobal(full)
        key = (module, name)
        if key not in self._placeholders:
            self._placeholders[key] = type(name, (Placeholder,), {"module": module, "name": name})
        return self._placeholders[key]

    def persistent_load(self, pid):
        # torch.save's storages: ("storage", storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.60}")
        _, storage_type, key, _, numel = pid
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else getattr(
            storage_type, "dtype", None)
        if not (isinstance(dtype, torch.dtype) and isinstance(key, str)
                and isinstance(numel, int) and numel >= 0):
            raise pickle.UnpicklingError(f"invalid storage {pid!r:.60}")
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, dtype, numel)
        return self._storages[key]

    def load_build(self):
        target, state = self.stack[-2], self.stack[-1]
        if isinstance(target, type) or not isinstance(target, _BUILDABLE):
            raise pickle.UnpicklingError(f"will not set the state of {type(target).__name__}")
        if isinstance(target, np.dtype):
            # (version, byte order, subarray, names, fields, size, alignment, flags[, metadata])
            if not (isinstance(state, tuple) and len(state) >= 8):
                raise pickle.UnpicklingError(f"invalid state of numpy dtype {target}")
            if state[2:5] != (None, None, None):  # numpy would take their layout on trust
                raise RefusedGlobal("a structured numpy dtype")
            # Size, alignment and flags (whether it holds objects) stay as numpy built them; the
            # byte order and a datetime's unit may be set.
            if state[5:8] != target.__reduce__()[2][5:8]:
                raise pickle.UnpicklingError(f"altered state of numpy dtype {target}")
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def is_zip_format(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a zip-format ``torch.save`` file (as torch.load decides)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def check_records(archive: zipfile.ZipFile) -> None:
    """Refuse (``RefusedRecord``) a zip-format ``torch.save`` file whose records are not stored
    as torch.save stores them: uncompressed, with one size in the zip directory, within the file.

    Loading allocates each record's size from the directory and inflates it before anything
    checks it: a deflated record of zeros is a thousand times its size on disk (a 1 MB file, 1 GB
    in memory). torch.save never compresses, so refusing compressed records loses nothing, and
    then what loading allocates is bounded by the file's own size: no cap beyond it is needed.
    """
    left = os.fstat(archive.fp.fileno()).st_size
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise RefusedRecord(f"its record {info.filename} is compressed, which torch.save "
                                "never does")
        left -= info.file_size
        if info.file_size != info.compress_size or left < 0:
            raise RefusedRecord(f"its zip directory gives record {info.filename} a size that "
                                "the file does not hold")


def load(path: str | os.PathLike) -> Any:
    """The object saved in a zip-format ``torch.save`` file, tensors on the CPU.

    Raises ``RefusedGlobal`` for a pickle that names a function or a refused class,
    ``RefusedRecord`` for records stored otherwise than by torch.save, and
    ``pickle.UnpicklingError``, ``zipfile.BadZipFile``, ``KeyError``... for a corrupt file.
    """
    with zipfile.ZipFile(path) as archive:
        check_records(archive)
        names = archive.namelist()
        if not names:
            raise zipfile.BadZipFile("empty archive")
        prefix = names[0].split("/", 1)[0]  # every record sits in one folder, as torch writes it
        byteorder = "little"  # files written before the byteorder record were little-endian
        if f"{prefix}/byteorder" in names:
            byteorder = archive.read(f"{prefix}/byteorder").decode("ascii", "replace")

        def read_storage(key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
            name = f"{prefix}/data/{key}"
            size = archive.getinfo(name).file_size  # checked before anything is read
            if size != numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key}: {size} bytes, expected "
                                             f"{numel * dtype.itemsize}")
            data = archive.read(name)
            storage = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8)
            if byteorder != sys.byteorder:
                storage.byteswap(dtype)
            return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)

        with archive.open(f"{prefix}/data.pkl") as data:
            return Unpickler(data, read_storage).load()


_MISSING = object()


def could_exist(name: str) -> bool:
    """Whether ``module.name`` can be a real global, as far as can be told without importing.

    A flipped byte or a cut line in a corrupt file makes a name that is no identifier, or that a
    module already loaded does not have. Bare names (torch's messages drop ``builtins.``) are
    builtins.
    """
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    if len(parts) == 1:
        parts = ["builtins", *parts]
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj = module
        for attr in parts[split:]:
            found = inspect.getattr_static(obj, attr, _MISSING)
            if found is _MISSING:
                # A package may have submodules that are not imported yet.
                return obj is module and hasattr(module, "__path__")
            obj = found
        return True
    return True
