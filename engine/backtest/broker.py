"""A simulated broker: orders decided at a bar close fill at the next bar's open, with costs.

Accounting keeps trading costs out of position sizing: a position is ``position_size`` times the
equity *before* fees and slippage paid so far. Costs therefore never change a fill's quantity, and
equity is exactly the cost-free equity minus the costs paid, so a cost's effect on the result is
the cost itself (not compounded through later position sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.backtest.config import BacktestSettings
from engine.errors import FatalError
from engine.events import CompositeSignal, Signal


def target_side(signal: CompositeSignal, allow_short: bool) -> int | None:
    """The position a decision asks for: +1 long, 0 flat, -1 short, ``None`` to keep the current one."""
    if not signal.actionable:
        return None
    match signal.signal:
        case Signal.BUY:
            return 1
        case Signal.SELL:
            return -1 if allow_short else 0
        case Signal.HOLD:
            return None
    raise FatalError(f"unknown signal {signal.signal!r}")


@dataclass(frozen=True, slots=True)
class Order:
    """A change of position decided at a bar close, waiting for the next bar's open."""

    target_side: int
    decided_at: int
    signal: Signal
    confidence: float


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. ``ts`` is the fill time (the open of the bar after the decision)."""

    ts: int
    decided_at: int
    side: str
    quantity: float
    reference_price: float
    price: float
    notional: float
    fee: float
    slippage: float
    position_after: float


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """A round trip: one entry and one exit (``status`` "open" when still held at the end)."""

    direction: str
    quantity: float
    entry_decided_at: int
    entry_ts: int
    entry_price: float
    exit_decided_at: int | None
    exit_ts: int | None
    exit_price: float
    fees: float
    pnl: float
    return_pct: float
    bars_held: int
    status: str


@dataclass(slots=True)
class _OpenTrade:
    direction: int
    quantity: float
    decided_at: int
    ts: int
    price: float
    fee: float
    bars_held: int = 0

    def record(
        self, exit_decided_at: int | None, exit_ts: int | None, exit_price: float, exit_fee: float, status: str
    ) -> TradeRecord:
        fees = self.fee + exit_fee
        pnl = self.direction * self.quantity * (exit_price - self.price) - fees
        return TradeRecord(
            "long" if self.direction > 0 else "short",
            self.quantity,
            self.decided_at,
            self.ts,
            self.price,
            exit_decided_at,
            exit_ts,
            exit_price,
            fees,
            pnl,
            pnl / (self.quantity * self.price),
            self.bars_held,
            status,
        )


class SimulatedBroker:
    """One symbol's account: cash, a signed quantity, and at most one pending order.

    No pyramiding: a decision for the side already held keeps the position as it is, and a
    change of side always closes the whole position first (a reversal is one fill).
    """

    def __init__(self, settings: BacktestSettings) -> None:
        self.settings = settings
        # Cash before fees; fees are kept apart so they can be attributed exactly.
        self._cash_before_fees = settings.initial_capital
        self.quantity = 0.0
        self.fees_paid = 0.0
        self.slippage_paid = 0.0
        self.traded_notional = 0.0
        self.pending: Order | None = None
        self.fills: list[Fill] = []
        self.trades: list[TradeRecord] = []
        self._open: _OpenTrade | None = None

    @property
    def side(self) -> int:
        return (self.quantity > 0) - (self.quantity < 0)

    @property
    def cash(self) -> float:
        return self._cash_before_fees - self.fees_paid

    def equity(self, price: float) -> float:
        """Marked-to-market equity after every cost paid."""
        return self._cash_before_fees + self.quantity * price - self.fees_paid

    def sizing_equity(self, price: float) -> float:
        """Equity as if no costs had been paid: the base positions are sized on."""
        return self._cash_before_fees + self.quantity * price + self.slippage_paid

    def decide(self, signal: CompositeSignal) -> Order | None:
        """Turn a bar-close decision into the order to fill at the next open (or none)."""
        target = target_side(signal, self.settings.allow_short)
        if target is None or target == self.side:
            self.pending = None
        else:
            self.pending = Order(target, signal.ts_event, signal.signal, signal.confidence)
        return self.pending

    def fill_pending(self, ts: int, open_price: float) -> Fill | None:
        """Fill the pending order at ``open_price`` plus slippage; fees on the filled notional."""
        order, self.pending = self.pending, None
        if order is None:
            return None
        if not open_price > 0:
            raise FatalError(f"cannot fill at a non-positive open price {open_price}")
        target_qty = order.target_side * self.settings.position_size * self.sizing_equity(open_price) / open_price
        delta = target_qty - self.quantity
        if delta == 0.0:
            return None
        direction = 1 if delta > 0 else -1
        quantity = abs(delta)
        price = open_price * (1.0 + direction * self.settings.slippage_rate)
        notional = quantity * price
        fee = notional * self.settings.fee_rate
        slippage = quantity * open_price * self.settings.slippage_rate
        self._cash_before_fees -= delta * price
        self.quantity = target_qty
        self.fees_paid += fee
        self.slippage_paid += slippage
        self.traded_notional += notional
        fill = Fill(
            ts,
            order.decided_at,
            "BUY" if direction > 0 else "SELL",
            quantity,
            open_price,
            price,
            notional,
            fee,
            slippage,
            self.quantity,
        )
        self.fills.append(fill)
        self._book(fill, order)
        return fill

    def mark(self, close: float) -> float:
        """End of a bar: count it toward the open trade and return the equity at ``close``."""
        if self._open is not None:
            self._open.bars_held += 1
        return self.equity(close)

    def open_trade(self, mark_price: float) -> TradeRecord | None:
        """The position still held, valued at ``mark_price`` with no exit cost."""
        if self._open is None:
            return None
        return self._open.record(None, None, mark_price, 0.0, "open")

    def _book(self, fill: Fill, order: Order) -> None:
        opened_qty = fill.quantity
        if self._open is not None:
            # The position differs in side from the target, so the whole of it is closed.
            closed_qty = self._open.quantity
            exit_fee = fill.fee * closed_qty / fill.quantity
            self.trades.append(self._open.record(order.decided_at, fill.ts, fill.price, exit_fee, "closed"))
            self._open = None
            opened_qty = fill.quantity - closed_qty
        if order.target_side != 0:
            entry_fee = fill.fee * opened_qty / fill.quantity
            self._open = _OpenTrade(
                order.target_side, abs(self.quantity), order.decided_at, fill.ts, fill.price, entry_fee
            )
