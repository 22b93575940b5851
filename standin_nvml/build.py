"""Build the stand-in NVML library (`libnvidia-ml.so.1`) with the system C compiler, cached.

`build()` returns the directory holding the library: put it on LD_LIBRARY_PATH and pynvml's
`CDLL("libnvidia-ml.so.1")` loads it. The cache key is the source, the compiler flags and the
set of functions left out, so a changed source rebuilds and each `missing` set has its own copy.

    python -m standin_nvml.build [--omit nvmlGpmQueryDeviceSupport ...] [--scenario FILE]

prints that directory; with --scenario, the scenario's `missing` lines are left out too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "nvml_standin.c"
LIBRARY = "libnvidia-ml.so.1"
CACHE = HERE.parent / ".gpulse-local" / "standin-nvml"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Wno-format-truncation", "-fPIC", "-shared", "-fvisibility=default")
# An exported function is defined at the start of a line (or through UINT_READING) in the source.
_DEFINED = re.compile(r"^(?:nvmlReturn_t|const char \*)\s*(nvml\w+)\(|^UINT_READING\((nvml\w+)", re.M)


class BuildError(Exception):
    """The library could not be built: no compiler, a compile error, or an unknown function name."""


def exports(source: Path = SOURCE) -> tuple[str, ...]:
    """Every NVML function the stand-in defines, in source order."""
    return tuple(a or b for a, b in _DEFINED.findall(source.read_text()))


def missing_in(scenario: Path) -> tuple[str, ...]:
    """The functions a scenario file lists on `missing NAME` lines."""
    names = []
    for line in scenario.read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "missing":
            names.append(words[1])
    return tuple(names)


def build(omit: Iterable[str] = (), *, cache: Path = CACHE, compiler: str | None = None) -> Path:
    """The directory of a built `libnvidia-ml.so.1` that exports every function but `omit`."""
    source = SOURCE.read_bytes()
    defined = exports()
    left_out = sorted(set(omit))
    unknown = [name for name in left_out if name not in defined]
    if unknown:
        raise BuildError(
            f"not a function of the stand-in: {', '.join(unknown)} (known: {', '.join(defined)})"
        )
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BuildError("no C compiler: install one (apt-get install gcc) or set CC")
    kept = [name for name in defined if name not in left_out]
    # A version script makes exactly these names visible to dlsym; the rest stay local.
    script = "{\n  global:\n" + "".join(f"    {n};\n" for n in kept) + "  local: *;\n};\n"
    key = hashlib.sha256(b"\0".join([source, script.encode(), " ".join(CFLAGS).encode(), cc.encode()]))
    out = cache / key.hexdigest()[:16]
    if (out / LIBRARY).is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    # Build in a temporary directory and rename it into place: concurrent builds never see half a library.
    work = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
    try:
        (work / "exports.map").write_text(script)
        result = subprocess.run(
            [
                *(cc, *CFLAGS, "-Wl,--version-script=" + str(work / "exports.map")),
                *("-Wl,-soname," + LIBRARY, "-o", str(work / LIBRARY), str(SOURCE), "-lm"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BuildError(f"{cc} failed ({result.returncode}):\n{result.stderr}")
        try:
            work.rename(out)
        except OSError:  # another process built the same key first: use its copy
            if not (out / LIBRARY).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m standin_nvml.build", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--omit", action="append", default=[], metavar="FUNCTION", help="leave this function out"
    )
    parser.add_argument("--scenario", type=Path, help="also leave out the scenario's `missing` functions")
    args = parser.parse_args(argv)
    omit = list(args.omit) + (list(missing_in(args.scenario)) if args.scenario else [])
    try:
        print(build(omit))
    except (BuildError, OSError) as e:
        print(f"standin_nvml.build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
