"""lucidlm's C kernels (code_tiles.c, decode_step.c): compiled with the machine's C compiler on first
use, kept in ~/.cache/lucidlm/kernels, called through ctypes.

Each source is plain C with AVX-512 intrinsics and OpenMP, no Python or PyTorch headers, so a build
takes under a second. Their OpenMP calls use PyTorch's thread pool: torch, imported before any of
them loads, ships the process's libgomp.so.1. Where one cannot be built (no compiler, another CPU, LUCIDLM_NATIVE=0) its
`library()` is None and the model keeps its PyTorch path, which computes the same function.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lucidlm" / "kernels"


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build_key(source: Path, cc: str) -> str:
    """The sources (every .c here: one may include another), the flags, the compiler and this CPU's
    feature list: -march=native builds for the machine it runs on, and a home folder can be shared by
    different machines."""
    try:
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        cpu = platform.processor()
    sources = [source.read_text()] + [other.read_text() for other in sorted(HERE.glob("*.c")) if other != source]
    text = "\n".join([*sources, " ".join(FLAGS), cc, cpu])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(cc: str, source: Path, target: Path) -> None:
    """Compile into a temporary file beside the target, then rename: a crash or a concurrent build
    never leaves a half-written library where a later run would load it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, str(source), "-o", partial], check=True, capture_output=True, timeout=120)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


@functools.cache
def load(name: str) -> tuple[ctypes.CDLL | None, str | None]:
    """(the library built from `name`.c beside this file, None) or (None, why it cannot run here)."""
    if os.environ.get("LUCIDLM_NATIVE", "1") == "0":
        return None, "LUCIDLM_NATIVE=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"lucidlm's C kernels are written for x86-64 (this is {platform.machine()})"
    cc = compiler()
    if cc is None:
        return None, "no C compiler (cc or gcc) on PATH"
    source = HERE / f"{name}.c"
    target = cache_dir() / f"{name}-{build_key(source, cc)}.so"
    if not target.exists():
        try:
            build(cc, source, target)
        except (OSError, subprocess.SubprocessError) as error:
            said = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
            lines = [line for line in said.splitlines() if "error" in line] or said.strip().splitlines()
            return None, f"could not build {source.name}: {lines[0].strip() if lines else error}"
    return ctypes.CDLL(str(target)), None


def declare(lib: ctypes.CDLL, name: str, *argtypes) -> None:
    """Give a C function its argument types (ctypes would pass 64-bit integers as 32-bit ones)."""
    function = getattr(lib, name)
    function.restype, function.argtypes = ctypes.c_int, list(argtypes)
