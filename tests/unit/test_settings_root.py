"""One frozen settings root: flags are laid over it as a new, validated object; Redis is on only with a URL;
each training method has its own config class."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.model.config import DEFAULT_ADAPTER_DIR
from adapters.redis.config import RedisSettings
from engine.errors import InvalidInput
from engine.events import Interval
from sigstream.commands.run import run_settings
from sigstream.commands.worker import worker_settings
from sigstream.modes.train.config import LoraConfig, PrefixConfig, TrainConfig
from sigstream.modes.train.methods import METHODS, FullConfig
from sigstream.settings import Settings, flag, load_settings, with_overrides
from tests.support.data import REPO_ROOT


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigstream.cli", *args],
        cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


# -- one frozen root ---------------------------------------------------------------------------------------------


def test_the_root_and_every_section_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.kafka = settings.kafka  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        settings.kafka.bootstrap = "elsewhere:9092"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        settings.engine.aggregator.threshold = 0.1  # type: ignore[misc]
    for name in Settings.model_fields:
        section = getattr(settings, name)
        assert section.model_config.get("frozen"), name


def test_overrides_are_a_new_object_and_leave_the_loaded_one_alone() -> None:
    settings = load_settings()
    changed = with_overrides(settings, flag("--partitions", 7, "kafka.partitions"))
    assert changed is not settings and changed.kafka.partitions == 7
    assert settings.kafka.partitions == Settings().kafka.partitions
    assert changed.engine is settings.engine  # sections no flag touched are shared, not copied
    assert with_overrides(settings, flag("--partitions", None, "kafka.partitions")) is settings  # None: not given


def test_an_override_is_validated_again_and_names_its_flag() -> None:
    settings = load_settings()
    with pytest.raises(InvalidInput, match=r"^--partitions: Input should be greater than or equal to 1 \(got 0\)"):
        with_overrides(settings, flag("--partitions", 0, "kafka.partitions"))
    with pytest.raises(InvalidInput, match=r"^--metrics-port \(as metrics --port\): .*65535"):
        with_overrides(settings, flag("--metrics-port", 70_000, "metrics.port"))
    with pytest.raises(InvalidInput, match=r"^--processing-guarantee: .*'at_least_once' or 'exactly_once'"):
        worker_settings(settings, guarantee="at_most_once")
    with pytest.raises(ValueError, match=r"no setting 'kafka\.bootstrapp'"):
        with_overrides(settings, flag("--kafka", "x:1", "kafka.bootstrapp"))  # a typo is never dropped silently


def test_a_nested_override_is_validated_with_its_section() -> None:
    settings = with_overrides(load_settings(), flag("--threshold", 0.9, "engine.aggregator.threshold"))
    assert settings.engine.aggregator.threshold == 0.9
    with pytest.raises(InvalidInput, match=r"^--threshold: Input should be less than or equal to 1"):
        with_overrides(settings, flag("--threshold", 1.5, "engine.aggregator.threshold"))


def test_a_bad_flag_value_exits_2_naming_the_flag() -> None:
    assert_one_line_exit_2(cli("worker", "--processing-guarantee", "at_most_once"), "--processing-guarantee:")
    assert_one_line_exit_2(cli("run", "--metrics-port", "70000"), "--metrics-port")


def test_flags_win_over_the_environment_which_wins_over_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGSTREAM_KAFKA__BOOTSTRAP", "env-host:9092")
    monkeypatch.setenv("SIGSTREAM_KAFKA__APP_ID", "env-app")
    monkeypatch.setenv("SIGSTREAM_ENGINE__INTERVAL", "5m")
    monkeypatch.setenv("SIGSTREAM_REDIS__URL", "redis://env-host:6379/0")
    from_env = worker_settings(load_settings())
    assert from_env.kafka.bootstrap == "env-host:9092" and from_env.kafka.app_id == "env-app"
    assert from_env.engine.interval == Interval.M5 and from_env.redis.url == "redis://env-host:6379/0"

    flagged = worker_settings(
        load_settings(), kafka="kafka://flag-host:9092", redis="redis://flag-host:6379/1", interval=Interval.H1,
        metrics_port=9100,
    )
    assert flagged.kafka.bootstrap == "flag-host:9092" and flagged.kafka.app_id == "env-app"
    assert flagged.engine.interval == Interval.H1 and flagged.redis.url == "redis://flag-host:6379/1"
    assert flagged.metrics.port == 9100


# -- Redis only with a URL ---------------------------------------------------------------------------------------


def test_a_key_prefix_alone_does_not_switch_redis_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGSTREAM_REDIS__URL", raising=False)
    monkeypatch.setenv("SIGSTREAM_REDIS__KEY_PREFIX", "shared-prefix")
    monkeypatch.setenv("SIGSTREAM_REDIS__TTL_S", "60")
    for settings in (worker_settings(load_settings()), run_settings(load_settings(), ["bybit"])):
        assert settings.redis.url is None
        assert settings.redis.key_prefix == "shared-prefix" and settings.redis.ttl_s == 60  # kept for when it is on


@pytest.mark.parametrize(
    ("env", "flag_value", "url"),
    [
        ({"SIGSTREAM_REDIS__URL": "redis://env:6379/0"}, None, "redis://env:6379/0"),
        ({}, "redis://flag:6379/2", "redis://flag:6379/2"),
        ({"SIGSTREAM_REDIS__URL": ""}, None, None),
        ({}, None, None),
    ],
    ids=["env-url", "flag", "empty-env-url", "nothing"],
)
def test_a_redis_url_from_the_flag_or_the_environment_switches_redis_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flag_value: str | None, url: str | None
) -> None:
    monkeypatch.delenv("SIGSTREAM_REDIS__URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert worker_settings(load_settings(), redis=flag_value).redis.url == url
    assert run_settings(load_settings(), ["bybit"], redis=flag_value).redis.url == url


def test_a_redis_client_needs_a_url() -> None:
    from adapters.redis.client import connect

    with pytest.raises(InvalidInput, match="no Redis URL"):
        connect(RedisSettings())


# -- a config class per training method --------------------------------------------------------------------------


def test_each_method_is_registered_with_its_own_config_class() -> None:
    assert {name: m.config for name, m in METHODS.items()} == {
        "lora": LoraConfig, "qlora": LoraConfig, "prefix": PrefixConfig, "full": FullConfig,
    }  # fmt: skip
    assert isinstance(TrainConfig(method="prefix").tuner, PrefixConfig)
    assert isinstance(TrainConfig(method="qlora").tuner, LoraConfig)


def test_per_method_configs_reject_the_other_methods_fields() -> None:
    with pytest.raises(ValidationError, match="prefix_tokens"):
        LoraConfig(prefix_tokens=8)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="rank"):
        PrefixConfig(rank=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="--rank is a setting of --method lora/qlora, not of --method prefix"):
        TrainConfig.model_validate({"method": "prefix", "rank": 4})
    with pytest.raises(ValidationError, match="--prefix-projection is a setting of --method prefix"):
        TrainConfig.model_validate({"method": "lora", "prefix_projection": True})
    with pytest.raises(ValidationError, match="takes a PrefixConfig"):
        TrainConfig(method="prefix", tuner=LoraConfig())
    # Another method's field at its default is no request: it is dropped.
    assert TrainConfig.model_validate({"method": "prefix", "rank": 16, "prefix_tokens": 5}).tuner == PrefixConfig(
        prefix_tokens=5
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "prefix", "--rank", "4"], "error: --rank is a setting of --method lora/qlora, not of --method"),
        (["--method", "lora", "--prefix-tokens", "5"], "error: --prefix-tokens is a setting of --method prefix"),
        (["--method", "qlora", "--prefix-projection"], "error: --prefix-projection is a setting of --method prefix"),
        (["--method", "lora", "--rank", "0"], "error: --rank: Input should be greater than or equal to 1"),
        # The other method's flags at their defaults pass; the run then fails on its own bad value.
        (["--method", "prefix", "--rank", "16", "--alpha", "32", "--epochs", "0"], "error: --epochs:"),
    ],
)
def test_train_refuses_another_methods_flag_in_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = cli("train", *args, "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "out"))
    assert_one_line_exit_2(proc, expected)
    assert not (tmp_path / "out").exists()


def test_train_flag_defaults_are_the_config_defaults() -> None:
    # A method's flag left at its default is no request; that holds only while the two defaults agree.
    from sigstream.commands.train import train_command

    defaults = {name: p.default.default for name, p in inspect.signature(train_command).parameters.items()}
    for cls in (LoraConfig, PrefixConfig):
        for name, info in cls.model_fields.items():
            default = defaults[name]
            if name == "target_modules":
                default = default.split(",")
            assert default == info.get_default(call_default_factory=True), name


def test_the_shipped_adapters_training_config_still_loads() -> None:
    path = DEFAULT_ADAPTER_DIR / "training_config.json"
    flat = json.loads(path.read_text())["config"]
    assert "tuner" not in flat  # written before the split: every field flat
    cfg = TrainConfig.load(path)
    assert cfg.method == "lora" and cfg.pooling == "cls"
    assert cfg.tuner == LoraConfig(rank=16, alpha=32, dropout=0.1, target_modules=["all-linear"])
    assert TrainConfig.model_validate(flat) == cfg  # the flat shape validates as it is, too


def test_a_saved_training_config_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig(method="prefix", tuner=PrefixConfig(prefix_tokens=8, prefix_projection=True), epochs=2)
    path = tmp_path / "training_config.json"
    path.write_text(json.dumps({"config": json.loads(cfg.model_dump_json())}))
    saved = json.loads(path.read_text())["config"]
    assert saved["method"] == "prefix" and saved["tuner"] == {"prefix_tokens": 8, "prefix_projection": True}
    assert TrainConfig.load(path) == cfg
