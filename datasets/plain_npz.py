"""``.npz`` files read as plain data: a pickled member can never run code.

Label files such as MER2023's ``label-6way.npz`` store dicts in object arrays, which numpy writes as pickles.
``np.load(allow_pickle=True)`` would unpickle whatever a file holds, and a crafted pickle calls any function it
names while it loads. Here each member's header is read first; a plain array is read with pickles refused, and an
object array is unpickled by :class:`PlainUnpickler`, which rebuilds containers, strings, numbers and numpy
arrays, scalars and dtypes, and refuses every other global before it is looked up.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from emotion_llama.errors import UserError

# The globals a numpy object array of plain Python data pickles to (numpy 1 and 2 module names).
PLAIN_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 spells bytes
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
})


class NotPlainData(pickle.UnpicklingError):
    """A pickle names a global that plain data never needs."""


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in PLAIN_GLOBALS:
            raise NotPlainData(f"{module}.{name}")
        return super().find_class(module, name)


def _read_member(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            _, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{member}: .npy format version {version} is not read here")
        if not dtype.hasobject:
            with zf.open(member) as plain:
                return np.lib.format.read_array(plain, allow_pickle=False)
        array = PlainUnpickler(f).load()  # numpy pickles an object array whole, after its header
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{member}: holds a {type(array).__name__}, not an array")
    return array


# What numpy and zipfile raise on a corrupt or truncated file.
NPZ_ERRORS = (ValueError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error)


def read_plain_npz(path: str | Path, what: str, fix: str) -> dict[str, np.ndarray]:
    """:func:`load_npz` for a file a user gave: a refused pickle or a corrupt file is one :class:`UserError`
    naming the file, ``what`` it should hold (e.g. "label data") and the ``fix``."""
    try:
        return load_npz(path)
    except NotPlainData as err:
        raise UserError(f"{path}: refused: a pickle in it names {err}, which plain {what} never needs (a file made "
                        f"to run code when loaded?); {fix}") from None
    except NPZ_ERRORS as err:
        detail = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{path} is corrupt or truncated ({type(err).__name__}: {detail}); {fix}") from None


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` by name. Raises NotPlainData naming the refused global when a
    member's pickle holds anything but plain data, and what numpy or zipfile raise on a corrupt file."""
    with zipfile.ZipFile(path) as zf:
        return {m[: -len(".npy")]: _read_member(zf, m) for m in zf.namelist() if m.endswith(".npy")}
