"""llama.cpp's tools for side-by-side benchmarks, built from source: the llama-cpp-python sdist
vendors llama.cpp, so pip (which reaches PyPI where nothing else can) fetches the source, and
cmake builds only the tool asked for. The build is cached under ~/.cache/lucidlm-bench.

    python bench/llama_build.py llama-server      # build it (minutes on 2 cores) and print its path
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "lucidlm-bench"


def llama_tool(name: str) -> tuple[Path | None, str]:
    """(path of the built tool, "") or (None, why it could not be built)."""
    built = sorted(CACHE.glob(f"llama_cpp_python-*/vendor/llama.cpp/build/bin/{name}"))
    if built:
        return built[-1], ""
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "llama-cpp-python", "-d", str(CACHE)], check=True, capture_output=True, text=True)
        sdist = sorted(CACHE.glob("llama_cpp_python-*.tar.gz"))[-1]
        with tarfile.open(sdist) as archive:
            archive.extractall(CACHE, filter="data")
        source = CACHE / sdist.name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
        subprocess.run(["cmake", "-S", str(source), "-B", str(source / "build"), "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DGGML_NATIVE=ON"],
                       check=True, capture_output=True, text=True)
        subprocess.run(["cmake", "--build", str(source / "build"), "--target", name, "-j", "2"],
                       check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, IndexError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, f"could not build {name}: {detail.strip().splitlines()[-1] if detail.strip() else exc}"
    path = source / "build" / "bin" / name
    return (path, "") if path.exists() else (None, f"the build made no {path}")


if __name__ == "__main__":
    tool, why = llama_tool(sys.argv[1] if len(sys.argv) > 1 else "llama-server")
    print(tool or why)
    sys.exit(0 if tool else 1)
