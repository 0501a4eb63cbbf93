"""Run an untrusted-input parser in a child process with a memory cap and a wall-clock timeout.

PDF parsing is the one step where a crafted file (decompression bomb, xref or outline loop) can
eat all memory or never finish, and pypdf's own caps are per stream, not per file. The child sets
RLIMIT_AS on itself (no preexec_fn: that is unsafe once the parent has threads, as the UI does),
parses, and writes one JSON object to stdout; the parent kills it at the deadline. The parent never
holds the decompressed data, so its memory stays flat whatever the file contains.

Child protocol: `python -m rag.sandbox MODULE:FUNCTION MAX_BYTES PATH` with the file's bytes on
stdin; FUNCTION(data: bytes, path: str) -> str; a LoaderError raised by it is passed back as-is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .errors import LoaderError

PDF_TIMEOUT = 120.0  # seconds per file; a real 300-page PDF takes ~20 s on a slow laptop core
PDF_MAX_MEMORY = 1536 * 2**20  # address space of the child (Python + pypdf need ~150 MB of it)


def _child_env() -> dict:
    # The child must import the same rag package (and test helpers) as this process.
    env = dict(os.environ)
    paths = [str(Path(__file__).resolve().parent.parent)] + [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.pop("PYTHONSTARTUP", None)
    return env


def run_limited(target: str, data: bytes, path: str, timeout: float, max_memory: int) -> str:
    """Call `target` ("module:function") on `data` in a child process; return its text or raise LoaderError."""
    cmd = [sys.executable, "-m", "rag.sandbox", target, str(int(max_memory)), path]
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, env=_child_env())
    except subprocess.TimeoutExpired:  # subprocess.run has already killed and reaped the child
        raise LoaderError(path, f"parsing took longer than {timeout:g}s (malformed file?); skipped") from None
    except OSError as e:
        raise LoaderError(path, f"cannot start the parser process: {e.strerror or e}") from None
    try:
        result = json.loads(proc.stdout.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        result = None
    if isinstance(result, dict) and "text" in result:
        return result["text"]
    if isinstance(result, dict) and "error" in result:
        raise LoaderError(path, result["error"])
    if proc.returncode < 0:
        raise LoaderError(path, f"parser was killed by signal {-proc.returncode} (memory limit?); skipped")
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    raise LoaderError(path, f"parser failed ({tail[0][:200]}); skipped")


def _child(argv: list[str]) -> int:
    import importlib
    import resource

    target, max_memory, path = argv[0], int(argv[1]), argv[2]
    data = sys.stdin.buffer.read()
    resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    module, func = target.split(":")
    out = sys.stdout
    try:
        text = getattr(importlib.import_module(module), func)(data, path)
        result = {"text": text}
    except LoaderError as e:
        result = {"error": e.reason}
    except MemoryError:
        result = {"error": f"needs more than {max_memory // 2**20} MB to parse (decompression bomb?); skipped"}
    json.dump(result, out, ensure_ascii=False)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
