"""Tests of keel.config: layering, provenance of errors, secrets."""

from __future__ import annotations

import json
import pickle
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from keel.config import KeelConfig, Secret, config_to_dict, load_config
from keel.core.errors import ConfigurationError
from keel.strategy_engine import (
    FundingArbitrageStrategy,
    GridTradingStrategy,
    HyperRsiStrategy,
    MeanReversionStrategy,
    RangeTradingStrategy,
    ScheduledDcaStrategy,
    TrendFollowingStrategy,
    VolatilityBreakoutStrategy,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
LIVE_KEYS = {
    "KEEL_BINANCE_API_KEY": "key-from-env-1234",
    "KEEL_BINANCE_API_SECRET": "secret-from-env-5678",
}


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load(mode: str | None = None, config_file: Path | None = None, **environ: str) -> KeelConfig:
    return load_config(mode, config_file, environ=environ, config_dir=CONFIG_DIR)


def load_error(mode: str | None = None, config_file: Path | None = None, **environ: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load(mode, config_file, **environ)
    return caught.value


# Defaults and modes


def test_defaults_match_the_schema() -> None:
    config = load()
    schema = KeelConfig()
    project = CONFIG_DIR.parent

    # Input paths of the defaults are read against the project (the defaults live in config/).
    relative = config.model_copy(
        update={
            "data": config.data.model_copy(update={"root": config.data.root.relative_to(project)}),
            "exchange": config.exchange.model_copy(
                update={
                    "instruments": config.exchange.instruments.relative_to(project),
                    "leverage_brackets": config.exchange.leverage_brackets.relative_to(project),
                }
            ),
        }
    )
    assert relative == schema


def test_the_default_data_root_is_the_projects_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    monkeypatch.chdir(tmp_path)

    # Act
    config = load("backtest")

    # Assert
    assert config.data.root == CONFIG_DIR.parent / "data"
    assert config.data.root.is_dir() and config.exchange.instruments.is_file()


def test_a_relative_data_root_resolves_against_the_config_file_that_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    folder = tmp_path / "site"
    folder.mkdir()
    user = write(folder / "user.yaml", "data:\n  root: ../recorded\n")
    monkeypatch.chdir(CONFIG_DIR.parent)

    # Act
    config = load("backtest", user)

    # Assert
    assert config.data.root.resolve() == tmp_path / "recorded"


def test_an_absolute_data_root_is_kept(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", f"data:\n  root: {tmp_path / 'elsewhere'}\n")

    assert load("backtest", user).data.root == tmp_path / "elsewhere"


@pytest.mark.parametrize("mode", ["backtest", "paper"])
def test_mode_loads_and_sets_run_mode(mode: str) -> None:
    config = load(mode)

    assert config.run.mode == mode


def test_live_without_confirmation_names_live_confirm() -> None:
    error = load_error("live", **LIVE_KEYS)

    assert error.key == "live.confirm"
    assert error.file == str(CONFIG_DIR / "live.yaml")


def test_live_confirmed_without_keys_names_api_key(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "live:\n  confirm: true\n")

    error = load_error("live", user)

    assert error.key == "secrets.binance_api_key"
    assert error.file == "environment"


def test_live_confirmed_with_keys_loads(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "live:\n  confirm: true\n")

    config = load("live", user, **LIVE_KEYS)

    assert config.run.mode == "live"
    assert config.live.testnet is True


@pytest.mark.parametrize(
    ("binance", "missing"),
    [
        ("rest_url: https://fapi.binance.com", "binance.ws_url"),
        ("ws_url: wss://fstream.binance.com", "binance.rest_url"),
    ],
)
def test_live_with_one_binance_url_set_names_the_other(tmp_path: Path, binance: str, missing: str) -> None:
    # Arrange: the other would be the testnet's (live.testnet), so orders and prices could come from two Binances
    user = write(tmp_path / "user.yaml", f"live:\n  confirm: true\nbinance:\n  {binance}\n")

    # Act
    error = load_error("live", user, **LIVE_KEYS)

    # Assert
    assert error.key == missing and error.file == str(user)
    assert "different Binances" in error.problem and "testnet's" in error.problem


def test_live_with_mainnet_rest_and_testnet_streams_names_the_streams_url(tmp_path: Path) -> None:
    # Arrange: orders would go to mainnet, priced from the testnet's market
    user = write(
        tmp_path / "user.yaml",
        "live:\n  confirm: true\n  testnet: false\nbinance:\n  rest_url: https://fapi.binance.com\n"
        "  ws_url: wss://stream.binancefuture.com\n",
    )

    # Act
    error = load_error("live", user, **LIVE_KEYS)

    # Assert
    assert error.key == "binance.ws_url" and error.file == str(user)
    assert "mainnet" in error.problem and "testnet" in error.problem


def test_live_on_the_testnet_with_mainnet_urls_names_the_testnet_switch(tmp_path: Path) -> None:
    # Arrange: live.testnet (config/live.yaml's default, or --testnet) asks for the testnet; the URLs are mainnet's
    user = write(
        tmp_path / "user.yaml",
        "live:\n  confirm: true\nbinance:\n  rest_url: https://fapi.binance.com\n  ws_url: wss://fstream.binance.com\n",
    )

    # Act
    error = load_error("live", user, **LIVE_KEYS)

    # Assert
    assert error.key == "live.testnet"
    assert "mainnet" in error.problem


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("KEEL_BINANCE__REST_URL", "127.0.0.1:8080", "binance.rest_url"),
        ("KEEL_BINANCE__REST_URL", "wss://fstream.binance.com", "binance.rest_url"),
        ("KEEL_BINANCE__WS_URL", "fstream.binance.com", "binance.ws_url"),
        ("KEEL_BINANCE__WS_URL", "https://fstream.binance.com", "binance.ws_url"),
    ],
)
def test_a_binance_url_without_its_scheme_or_host_names_the_key(variable: str, value: str, key: str) -> None:
    # Arrange: the run reached the first request and raised aiohttp's or websockets' traceback

    # Act
    error = load_error("paper", **{variable: value})

    # Assert
    assert error.key == key and error.file == f"environment variable {variable}"


def test_a_bad_key_of_a_section_no_file_sets_is_blamed_on_its_own_variable() -> None:
    # Arrange: no file has a binance section; two variables set two of its keys, the first one bad
    environ = {"KEEL_BINANCE__REST_URL": "127.0.0.1:8080", "KEEL_BINANCE__WS_URL": "ws://127.0.0.1:8080"}

    # Act
    error = load_error("paper", **environ)

    # Assert: the variable that set binance.rest_url is named, not the last one to touch the section
    assert error.key == "binance.rest_url"
    assert error.file == "environment variable KEEL_BINANCE__REST_URL"


def test_live_with_both_binance_urls_set_loads(tmp_path: Path) -> None:
    # Arrange: a local Binance, or a proxy of both
    user = write(
        tmp_path / "user.yaml",
        "live:\n  confirm: true\nbinance:\n  rest_url: http://127.0.0.1:1\n  ws_url: ws://127.0.0.1:1\n",
    )

    # Act
    config = load("live", user, **LIVE_KEYS)

    # Assert
    assert config.binance.rest_url == "http://127.0.0.1:1"


def test_unknown_mode_is_rejected() -> None:
    error = load_error("bogus")

    assert error.key == "run.mode"


def test_file_contradicting_requested_mode_is_rejected(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "run:\n  mode: backtest\n")

    error = load_error("paper", user)

    assert (error.file, error.key) == (str(user), "run.mode")


# Layering


def test_user_file_is_deep_merged_over_defaults(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "risk:\n  max_leverage: 1.5\n")

    config = load(config_file=user)

    assert config.risk.max_leverage == 1.5
    assert config.risk.max_order_notional == Decimal(50000)


def test_environment_override_wins_over_files(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "risk:\n  max_leverage: 1.5\n")

    config = load(config_file=user, KEEL_RISK__MAX_LEVERAGE="2")

    assert config.risk.max_leverage == 2.0


def test_comma_separated_environment_value_fills_a_tuple() -> None:
    config = load(KEEL_DATA__SYMBOLS="BTCUSDT,ETHUSDT")

    assert config.data.symbols == ("BTCUSDT", "ETHUSDT")


def test_date_is_read_as_midnight_utc(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "data:\n  start: 2025-05-10\n  end: '2025-05-12'\n")

    config = load(config_file=user)

    assert config.data.start == datetime(2025, 5, 10, tzinfo=UTC)
    assert config.data.end == datetime(2025, 5, 12, tzinfo=UTC)


def test_config_is_frozen() -> None:
    config = load()

    with pytest.raises(ValidationError):
        config.risk.max_leverage = 10.0  # type: ignore[misc]


# Errors name the file and key that caused them


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("risk:\n  max_levrage: 2\n", "risk.max_levrage"),
        ("risk:\n  max-leverage: 2\n", "risk.max-leverage"),
        ("riks:\n  max_leverage: 2\n", "riks"),
    ],
)
def test_unknown_key_names_the_user_file_and_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    user = write(tmp_path / "user.yaml", text)

    error = load_error(config_file=user)

    assert (error.file, error.key) == (str(user), key)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("risk:\n  max_leverage: lots\n", "risk.max_leverage"),
        ("risk:\n  max_leverage: .nan\n", "risk.max_leverage"),
        ("exchange:\n  maker_fee: .inf\n", "exchange.maker_fee"),
        ("exchange:\n  taker_fee: NaN\n", "exchange.taker_fee"),
        ("bus:\n  capacity: 0\n", "bus.capacity"),
        ("data:\n  start: 2025-05-10\n  end: 2025-05-01\n", "data.end"),
        ("strategy:\n  fast_period: 60\n  slow_period: 20\n", "strategy.fast_period"),
        (
            "strategy:\n  parameters:\n    trend_following:\n      fast_period: 101\n",
            "strategy.parameters.trend_following.fast_period",
        ),
        (
            "strategy:\n  parameters:\n    mean_reversion:\n      entry_z: 4.0\n      stop_z: 3.0\n",
            "strategy.parameters.mean_reversion.entry_z",
        ),
        (
            "strategy:\n  parameters:\n    range_trading:\n      min_range_width: 0.09\n      max_range_width: 0.05\n",
            "strategy.parameters.range_trading.min_range_width",
        ),
        (
            "strategy:\n  parameters:\n    funding_arbitrage:\n      holding_intervals: 2.5\n",
            "strategy.parameters.funding_arbitrage.holding_intervals",
        ),
        ("portfolio:\n  lookback_bars: 10\n", "portfolio.min_history_bars"),
        ("portfolio:\n  min_history_bars: 5000\n", "portfolio.min_history_bars"),
        ("portfolio:\n  strategy_floor: 0.7\n", "portfolio.strategy_floor"),
        ("portfolio:\n  objective: efficient_return\n", "portfolio.target_return"),
        ("portfolio:\n  objective: efficient_risk\n", "portfolio.target_volatility"),
        ("exchange:\n  position_mode: HEDGE\n", "exchange.position_mode"),
    ],
)
def test_bad_value_names_the_user_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    user = write(tmp_path / "user.yaml", text)

    error = load_error(config_file=user)

    assert (error.file, error.key) == (str(user), key)


def test_cross_field_error_names_the_last_file_touching_the_section(
    tmp_path: Path,
) -> None:
    # default.yaml sets fast_period 20; the user file makes it invalid.
    user = write(tmp_path / "user.yaml", "strategy:\n  slow_period: 10\n")

    error = load_error(config_file=user)

    assert (error.file, error.key) == (str(user), "strategy.fast_period")


def test_bad_environment_override_is_reported_as_the_source() -> None:
    error = load_error(KEEL_RISK__MAX_LEVERAGE="-1")

    assert error.file == "environment variable KEEL_RISK__MAX_LEVERAGE"
    assert error.key == "risk.max_leverage"


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "risk: [unclosed\n")

    error = load_error(config_file=user)

    assert error.file == str(user)


def test_missing_user_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"

    error = load_error(config_file=missing)

    assert error.file == str(missing)


def test_error_message_is_one_line_with_file_and_key(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "risk:\n  max_levrage: 2\n")

    message = str(load_error(config_file=user))

    assert "\n" not in message
    assert str(user) in message
    assert "risk.max_levrage" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("risk_aversion", "5.0"), ("objective", "max_sharpe"), ("covariance", "ewma"), ("covariance_halflife_bars", "60")],
)
def test_a_markowitz_only_key_set_with_another_allocator_stops_at_start_naming_the_file_and_key(
    tmp_path: Path, key: str, value: str
) -> None:
    # Arrange: the equal-weight allocator silently ignored these
    user = write(tmp_path / "user.yaml", f"portfolio:\n  allocator: equal_weight\n  {key}: {value}\n")

    # Act
    error = load_error(config_file=user)

    # Assert
    assert (error.file, error.key) == (str(user), f"portfolio.{key}")
    assert "applies to the markowitz allocator only" in error.problem


def test_a_markowitz_only_environment_override_with_equal_weights_in_the_file_names_the_variable(
    tmp_path: Path,
) -> None:
    # Arrange
    user = write(tmp_path / "user.yaml", "portfolio:\n  allocator: equal_weight\n")

    # Act
    error = load_error(config_file=user, KEEL_PORTFOLIO__RISK_AVERSION="10")

    # Assert
    assert (error.file, error.key) == ("environment variable KEEL_PORTFOLIO__RISK_AVERSION", "portfolio.risk_aversion")


def test_equal_weights_load_over_the_default_files_that_document_every_markowitz_key(tmp_path: Path) -> None:
    # Arrange: config/default.yaml sets every key; a folder of defaults may set Markowitz values of its own
    folder = tmp_path / "config"
    folder.mkdir()
    write(folder / "default.yaml", (CONFIG_DIR / "default.yaml").read_text(encoding="utf-8"))
    write(folder / "backtest.yaml", "portfolio:\n  risk_aversion: 100.0\n")
    user = write(tmp_path / "user.yaml", "portfolio:\n  allocator: equal_weight\n  rebalance_threshold: 0.01\n")

    # Act
    from_environment = load(KEEL_PORTFOLIO__ALLOCATOR="equal_weight")
    from_file = load_config("backtest", user, environ={}, config_dir=folder)

    # Assert
    assert from_environment.portfolio.allocator == from_file.portfolio.allocator == "equal_weight"
    assert from_file.portfolio.risk_aversion == 100.0


# Secrets


def test_secrets_come_from_the_environment() -> None:
    config = load(**LIVE_KEYS, KEEL_API_TOKEN="token-from-env-9999")

    assert config.secrets.binance_api_key == Secret("key-from-env-1234")
    assert config.secrets.api_token is not None
    assert config.secrets.api_token.reveal() == "token-from-env-9999"


def test_secrets_come_from_a_private_secret_file(tmp_path: Path) -> None:
    secret_file = write(
        tmp_path / "keel.secrets",
        "# keys\nKEEL_BINANCE_API_KEY=key-from-file-1234\n\nKEEL_BINANCE_API_SECRET='s-5678'\n",
        mode=0o600,
    )

    config = load(KEEL_SECRET_FILE=str(secret_file))

    assert config.secrets.binance_api_key == Secret("key-from-file-1234")
    assert config.secrets.binance_api_secret == Secret("s-5678")


def test_environment_secret_wins_over_secret_file(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "keel.secrets", "KEEL_API_TOKEN=from-file\n", mode=0o600)

    config = load(KEEL_SECRET_FILE=str(secret_file), KEEL_API_TOKEN="from-env")

    assert config.secrets.api_token == Secret("from-env")


def test_world_readable_secret_file_is_rejected(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "keel.secrets", "KEEL_API_TOKEN=t-1234\n", mode=0o644)

    error = load_error(KEEL_SECRET_FILE=str(secret_file))

    assert error.file == str(secret_file)


def test_unknown_name_in_secret_file_is_rejected_without_echoing_the_line(
    tmp_path: Path,
) -> None:
    secret_file = write(tmp_path / "keel.secrets", "BINANCE_KEY=leaky-value\n", mode=0o600)

    error = load_error(KEEL_SECRET_FILE=str(secret_file))

    assert (error.file, error.key) == (str(secret_file), "line 1")
    assert "leaky-value" not in str(error)


def test_secret_in_a_yaml_file_is_rejected(tmp_path: Path) -> None:
    user = write(tmp_path / "user.yaml", "secrets:\n  binance_api_key: yaml-key-1234\n")

    error = load_error(config_file=user)

    assert (error.file, error.key) == (str(user), "secrets.binance_api_key")
    assert "yaml-key-1234" not in str(error)


def test_secret_repr_and_str_hide_the_value() -> None:
    secret = Secret("hunter2-value")

    shown = repr(secret) + str(secret) + f"{secret}"

    assert "hunter2-value" not in shown
    assert secret.reveal() == "hunter2-value"


def test_secret_is_equal_by_value_and_survives_pickling() -> None:
    secret = Secret("abc")

    copied = pickle.loads(pickle.dumps(secret))

    assert copied == secret
    assert secret != Secret("abd")


def test_secret_is_immutable() -> None:
    secret = Secret("abc")

    with pytest.raises(AttributeError):
        secret._value = "changed"  # type: ignore[misc]


def test_config_repr_and_dumps_never_contain_secret_values() -> None:
    config = load(**LIVE_KEYS)

    shown = repr(config) + str(config) + config.model_dump_json()
    dumped = config_to_dict(config)

    for value in LIVE_KEYS.values():
        assert value not in shown
        assert value not in json.dumps(dumped)
    assert dumped["secrets"]["binance_api_key"] == "**********"
    assert dumped["secrets"]["api_token"] is None


@pytest.mark.parametrize("value", ["none", "None", "null"])
def test_funding_none_means_no_funding_data(value: str) -> None:
    # Act
    config = KeelConfig.model_validate({"data": {"funding": value}})

    # Assert
    assert config.data.funding is None


def test_every_binance_interval_is_accepted_and_resampling_must_divide_it() -> None:
    # Act
    five = KeelConfig.model_validate({"data": {"bar_interval": "5m", "resample_from": "1m"}})

    # Assert
    assert five.data.bar_interval == "5m"
    with pytest.raises(ValidationError, match="resample_from"):
        KeelConfig.model_validate({"data": {"bar_interval": "5m", "resample_from": "3m"}})
    with pytest.raises(ValidationError, match="bar_interval"):
        KeelConfig.model_validate({"data": {"bar_interval": "7m"}})


def test_relative_input_paths_are_read_against_the_file_that_names_them(tmp_path: Path) -> None:
    # Arrange
    layer = tmp_path / "research" / "layer.yaml"
    layer.parent.mkdir()
    layer.write_text("data:\n  root: ../recordings\n")

    # Act
    mine = load_config("backtest", layer)
    default = load_config("backtest")

    # Assert
    assert mine.data.root == (tmp_path / "recordings").resolve()
    assert default.data.root == (CONFIG_DIR.parent / "data").resolve()
    assert default.exchange.instruments == (CONFIG_DIR / "instruments.yaml").resolve()


def test_backtest_from_another_folder_finds_the_bundled_data(tmp_path: Path) -> None:
    # Arrange
    import subprocess
    import sys

    # Act
    completed = subprocess.run(
        [sys.executable, "-m", "keel.cli", "backtest", "--symbols", "BTCUSDT", "--start", "2025-05-05",
         "--end", "2025-05-06", "--output", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert
    assert completed.returncode == 0, completed.stderr


def test_the_default_file_documents_each_strategy_parameter_from_the_strategy() -> None:
    # Arrange: the strategies' parameter spaces are the one source of defaults, ranges and descriptions
    spaces = {
        "trend_following": TrendFollowingStrategy.parameter_space,
        "mean_reversion": MeanReversionStrategy.parameter_space,
        "range_trading": RangeTradingStrategy.parameter_space,
        "funding_arbitrage": FundingArbitrageStrategy.parameter_space,
        "grid_trading": GridTradingStrategy.parameter_space,
        "hyper_rsi": HyperRsiStrategy.parameter_space,
        "volatility_breakout": VolatilityBreakoutStrategy.parameter_space,
        "scheduled_dca": ScheduledDcaStrategy.parameter_space,
    }
    lines = (CONFIG_DIR / "default.yaml").read_text().splitlines()

    # Act
    documented: dict[tuple[str, str], tuple[float, str]] = {}
    section = None
    for line in lines:
        if (header := re.fullmatch(r"    (\w+):.*", line)) is not None:
            section = header.group(1)
        elif section in spaces and (entry := re.fullmatch(r"      (\w+): ([^#]+?)  # (.*)", line)) is not None:
            documented[(section, entry.group(1))] = (float(entry.group(2)), entry.group(3))

    # Assert
    expected = {(section, name) for section, space in spaces.items() for name in space}
    assert set(documented) == expected
    for (section, name), (default, comment) in documented.items():
        spec = spaces[section][name]
        assert default == spec.default, (section, name)
        assert comment.startswith(spec.describe()), (section, name, comment, spec.describe())


# The folder of configuration files


def test_config_dir_may_be_given_as_a_string() -> None:
    # Act
    from_string = load_config("backtest", environ={}, config_dir=str(CONFIG_DIR))

    # Assert
    assert from_string == load_config("backtest", environ={}, config_dir=CONFIG_DIR)


def test_a_config_dir_that_is_not_a_folder_stops_at_start_naming_it(tmp_path: Path) -> None:
    # Arrange: a typo would otherwise load none of the files and run on the built-in defaults.
    missing = tmp_path / "conifg"

    # Act
    with pytest.raises(ConfigurationError) as caught:
        load_config("backtest", environ={}, config_dir=missing)

    # Assert
    assert caught.value.file == str(missing) and "not a folder" in caught.value.problem


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("risk:\n  max_leverage: true\n", "risk.max_leverage"),
        ("strategy:\n  parameters:\n    trend_following:\n      fast_period: yes\n", "fast_period"),
    ],
)
def test_a_boolean_where_a_number_goes_stops_at_start(tmp_path: Path, text: str, key: str) -> None:
    # Arrange: YAML reads true and yes as booleans; as numbers they would be 1
    config_file = write(tmp_path / "mine.yaml", text)

    # Act
    error = load_error("backtest", config_file)

    # Assert
    assert error.file == str(config_file) and error.key.endswith(key)
    assert error.problem.startswith("expected a number, not a boolean")


def test_booleans_still_set_switches() -> None:
    # Act
    config = load("backtest", KEEL_RUN__REGIME_FIT_WORKER="false")

    # Assert
    assert config.run.regime_fit_worker is False


def test_a_section_given_twice_in_one_file_stops_at_start_naming_both_lines(tmp_path: Path) -> None:
    # Arrange: the second risk block would silently drop the first one's drawdown limit
    config_file = write(tmp_path / "mine.yaml", "risk:\n  max_drawdown_pct: 0.1\nrisk:\n  max_leverage: 2\n")

    # Act
    error = load_error("backtest", config_file)

    # Assert
    assert error.file == str(config_file)
    assert error.problem.startswith("'risk' is given twice in one mapping (first at line 1)")
    assert error.problem.endswith("at line 3, column 1")


@pytest.mark.parametrize("key", ["max_leverage", "max_net_leverage"])
def test_a_leverage_limit_above_binances_largest_stops_at_start_naming_the_key(tmp_path: Path, key: str) -> None:
    # Arrange
    user = write(tmp_path / "user.yaml", f"risk:\n  {key}: 200\n")

    # Act
    error = load_error("backtest", config_file=user)

    # Assert
    assert f"risk.{key}" in str(error) and "125" in str(error)
