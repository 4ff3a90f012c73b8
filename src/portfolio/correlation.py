"""Correlation analysis: rolling correlation, risk decomposition, diversification, correlation jumps.

:class:`CorrelationAnalyzer` keeps a rolling window of aligned per-bar returns
(from ``BarClosed`` on the bus, or given to :meth:`CorrelationAnalyzer.fit`)
and the last proposed weights (``AllocationProposed``). It answers the user's
UC-3.2 calls: :meth:`~CorrelationAnalyzer.calculate_correlation_matrix` and
:meth:`~CorrelationAnalyzer.decompose_portfolio_risk`, whose component
contributions ``w_i (S w)_i / sigma_p`` sum to the portfolio volatility
``sigma_p`` exactly (Euler's theorem for a homogeneous risk measure).

Every ``check_interval`` completed rows it compares the correlation of the
last ``short_window`` rows with that of the whole window, and publishes
``CorrelationJumped`` for every pair that moved by more than ``jump_threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.core.bus import EventBus
from keel.core.clock import Clock, SimulatedClock
from keel.core.component import Component
from keel.core.messages import AllocationProposed, BarClosed, CorrelationJumped
from keel.portfolio.estimators import estimate_covariance, refuse_prices, require_numeric_columns, validate_returns
from keel.portfolio.returns import ReturnWindow


@dataclass(frozen=True, slots=True)
class RiskDecomposition:
    """A portfolio's volatility split by asset.

    ``marginal[i]`` is d sigma_p / d w_i, ``component[i] = w_i x marginal[i]``
    (they sum to ``volatility``), ``share[i] = component[i] / volatility``.
    """

    volatility: float
    marginal: dict[str, float]
    component: dict[str, float]
    share: dict[str, float]
    diversification_ratio: float


def decompose_risk(weights: np.ndarray, covariance: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Return (volatility, marginal contributions, component contributions) of weights under a covariance."""
    w = np.asarray(weights, dtype=np.float64)
    sigma_w = covariance @ w
    volatility = float(np.sqrt(max(0.0, float(w @ sigma_w))))
    if volatility == 0:
        return 0.0, np.zeros_like(w), np.zeros_like(w)
    marginal = sigma_w / volatility
    return volatility, marginal, w * marginal


def diversification_ratio(weights: np.ndarray, covariance: np.ndarray) -> float:
    """Return ``sum |w_i| sigma_i / sigma_p`` (1 for one asset or perfect correlation; larger is more diversified)."""
    w = np.asarray(weights, dtype=np.float64)
    volatility = float(np.sqrt(max(0.0, w @ covariance @ w)))
    if volatility == 0:
        return 1.0
    return float(np.abs(w) @ np.sqrt(np.clip(np.diag(covariance), 0.0, None))) / volatility


def correlation_from_covariance(covariance: np.ndarray) -> np.ndarray:
    """Return the correlation matrix of a covariance (0 off the diagonal where a variance is 0)."""
    scale = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    outer = np.outer(scale, scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.where(outer > 0, covariance / outer, 0.0)
    np.fill_diagonal(correlation, 1.0)
    return correlation


_FRAME_TO_FIT = "{argument} was given a frame of returns: call fit(returns) first, then the analysis without it"


def _rows(window: object) -> int:
    """Return ``window`` as a positive number of rows, or raise naming what was given."""
    if isinstance(window, pd.DataFrame):
        raise TypeError(_FRAME_TO_FIT.format(argument="window (a number of rows)"))
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise TypeError(f"window must be a whole number of rows, got {window!r}")
    if window < 1:
        raise ValueError(f"window must be at least 1 row, got {window}")
    return int(window)


class CorrelationAnalyzer(Component):
    """Rolling correlations, risk decomposition and correlation-jump alerts.

    Parameters
    ----------
    symbols
        The universe followed on the bus.
    window
        Rows of returns kept.
    short_window
        Recent rows compared with the whole window for jumps.
    jump_threshold
        Smallest absolute change of a pairwise correlation that is a jump.
    check_interval
        Completed rows between jump checks.
    covariance
        Covariance estimator for the decomposition (sample, ledoit_wolf, ewma).
    bus, clock
        The event bus and the clock; private ones when used standalone.
    """

    def __init__(
        self,
        symbols: Sequence[str] = (),
        *,
        window: int = 1440,
        short_window: int = 120,
        jump_threshold: float = 0.3,
        check_interval: int = 60,
        covariance: str = "sample",
        bus: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("portfolio.correlation", bus or EventBus(), clock or SimulatedClock(0))
        if not 2 <= short_window <= window:
            raise ValueError(f"need 2 <= short_window <= window, got {short_window} and {window}")
        if not 0 < jump_threshold <= 2:
            raise ValueError(f"jump threshold must lie in (0, 2], got {jump_threshold}")
        self.symbols = tuple(symbols)
        self.window = window
        self.short_window = short_window
        self.jump_threshold = jump_threshold
        self.check_interval = check_interval
        self.covariance = covariance
        self._returns = ReturnWindow(self.symbols, window) if self.symbols else None
        self._frame: pd.DataFrame | None = None
        self._weights: dict[str, float] | None = None
        self.alerts: list[CorrelationJumped] = []
        self._last_ts = 0

    def fit(self, returns: pd.DataFrame) -> CorrelationAnalyzer:
        """Analyze a frame of returns (one column per asset) instead of the bus's bars.

        Raises
        ------
        TypeError
            If ``returns`` is not a pandas DataFrame.
        ValueError
            If a column holds no numbers, or the returns hold NaN or infinity or look like prices.
        """
        if not isinstance(returns, pd.DataFrame):
            raise TypeError(
                f"returns must be a pandas DataFrame of returns, one column per asset, got {type(returns).__name__}"
            )
        require_numeric_columns(returns)
        refuse_prices(validate_returns(returns.to_numpy(), names=[str(c) for c in returns.columns]))
        self._frame = returns.tail(self.window).copy()
        return self

    def on_start(self) -> None:
        """Subscribe to bars and allocations."""
        self.bus.subscribe(BarClosed, self.on_bar, name=f"{self.name}.returns")
        self.bus.subscribe(AllocationProposed, self.on_allocation, name=f"{self.name}.weights")

    def on_bar(self, bar: BarClosed) -> None:
        """Feed the close; check for correlation jumps every ``check_interval`` completed rows."""
        if self._returns is None:
            return
        row = self._returns.add_close(bar.symbol, bar.ts_event, bar.close)
        self._last_ts = bar.ts_event
        if row is not None and self._returns.rows_added % self.check_interval == 0:
            self.check_jumps(self._last_ts)

    def on_allocation(self, allocation: AllocationProposed) -> None:
        """Keep the proposed weights for the decomposition."""
        self._weights = {s: w for s, w in allocation.weights.items() if np.isfinite(w)}

    def returns_frame(self) -> pd.DataFrame:
        """Return the returns analyzed: the fitted frame, else the bus window."""
        if self._frame is not None:
            return self._frame
        if self._returns is None:
            return pd.DataFrame()
        return pd.DataFrame(self._returns.returns(), columns=list(self.symbols))

    def _analyzed_returns(self) -> pd.DataFrame:
        """Return :meth:`returns_frame`, or raise saying how to give the analyzer returns when it has none."""
        frame = self.returns_frame()
        if frame.columns.empty:
            raise ValueError(
                "no returns to analyze yet: call fit(returns) with a frame of returns (one column per asset), "
                "or build the analyzer with symbols and start it on the bus so it collects their bars"
            )
        return frame

    def calculate_correlation_matrix(self, window: int | None = None) -> pd.DataFrame:
        """Return the correlation matrix of the last ``window`` rows (all kept rows when None).

        Raises
        ------
        TypeError
            If ``window`` is not a whole number (a frame of returns goes to :meth:`fit`).
        ValueError
            With no returns yet, fewer than 2 rows of them, or a ``window`` below 1.
        """
        rows = None if window is None else _rows(window)
        frame = self._analyzed_returns()
        if rows is not None:
            frame = frame.tail(rows)
        array = validate_returns(frame.to_numpy())
        correlation = correlation_from_covariance(np.atleast_2d(np.cov(array, rowvar=False)))
        return pd.DataFrame(correlation, index=frame.columns, columns=frame.columns)

    def decompose_portfolio_risk(self, weights: Mapping[str, float] | None = None) -> RiskDecomposition:
        """Split the portfolio's per-bar volatility by asset (last proposed weights when None).

        Raises
        ------
        TypeError
            If ``weights`` is a frame of returns (those go to :meth:`fit`).
        ValueError
            With no returns yet; with no ``weights`` before any allocation was
            proposed (there is no portfolio to decompose, not one of zero
            risk); or if a weight names an asset without returns or is not a
            finite number.
        """
        if isinstance(weights, pd.DataFrame):
            raise TypeError(_FRAME_TO_FIT.format(argument="weights (a mapping of asset to weight)"))
        frame = self._analyzed_returns()
        array = validate_returns(frame.to_numpy())
        chosen = self._allocation() if weights is None else dict(weights)
        names = [str(c) for c in frame.columns]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"weights name assets without returns: {', '.join(unknown)}")
        for name, weight in chosen.items():
            if not math.isfinite(weight):
                raise ValueError(f"the weight of {name} must be a finite number, got {weight}")
        vector = np.array([chosen.get(name, 0.0) for name in names])
        covariance = estimate_covariance(array, self.covariance)
        volatility, marginal, component = decompose_risk(vector, covariance)
        share = component / volatility if volatility > 0 else np.zeros_like(component)
        return RiskDecomposition(
            volatility=volatility,
            marginal=dict(zip(names, marginal.tolist(), strict=True)),
            component=dict(zip(names, component.tolist(), strict=True)),
            share=dict(zip(names, share.tolist(), strict=True)),
            diversification_ratio=diversification_ratio(vector, covariance),
        )

    def _allocation(self) -> dict[str, float]:
        """Return the last proposed weights, or raise saying how to get some when none was proposed yet."""
        if self._weights is None:
            raise ValueError(
                "no allocation yet to decompose: the analyzer takes the weights of the last AllocationProposed on "
                "its bus and none came; start it on the bus with the allocator and run or rebalance first "
                "(portfolio_optimizer.rebalance_portfolio()), or pass the weights: "
                "decompose_portfolio_risk({'BTCUSDT': 0.6, 'ETHUSDT': 0.4})"
            )
        return self._weights

    def check_jumps(self, ts: int) -> list[CorrelationJumped]:
        """Compare recent and whole-window correlations; publish and return the jumps."""
        frame = self.returns_frame()
        if len(frame) < max(self.short_window, 2) * 2:
            return []
        array = frame.to_numpy()
        whole = correlation_from_covariance(np.cov(array, rowvar=False))
        recent = correlation_from_covariance(np.cov(array[-self.short_window :], rowvar=False))
        names = [str(c) for c in frame.columns]
        jumps = []
        rows, columns = np.triu_indices(len(names), k=1)
        for i, j in zip(rows.tolist(), columns.tolist(), strict=True):
            if abs(recent[i, j] - whole[i, j]) > self.jump_threshold:
                jumps.append(
                    CorrelationJumped(
                        first=names[i],
                        second=names[j],
                        previous=float(whole[i, j]),
                        current=float(recent[i, j]),
                        threshold=self.jump_threshold,
                        ts_event=ts,
                        ts_init=self.clock.timestamp_ns(),
                    )
                )
        for jump in jumps:
            self.bus.publish(jump)
        self.alerts.extend(jumps)
        return jumps
