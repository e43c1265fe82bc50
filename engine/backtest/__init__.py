"""Backtesting composite signals: a simulated broker driven by the same engine as live and replay.

:func:`run_backtest` replays prices and news through :class:`engine.runtime.Runtime`; the
:class:`Backtester` records each bar-close decision and fills it at the next bar's open.
"""

from engine.backtest.broker import Fill, SimulatedBroker, TradeRecord
from engine.backtest.config import BacktestSettings
from engine.backtest.runner import Backtester, BacktestResult, Decision, EquityPoint, run_backtest

__all__ = [
    "BacktestResult",
    "BacktestSettings",
    "Backtester",
    "Decision",
    "EquityPoint",
    "Fill",
    "SimulatedBroker",
    "TradeRecord",
    "run_backtest",
]
