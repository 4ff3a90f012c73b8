"""Market impact: observed taker orders against the book, and a power-law model fitted on them.

Observations (:class:`ImpactCollector`, streaming; :func:`impact_observations_batch`,
the plain pandas reference a test holds equal to it). Trades at the same
exchange time with the same aggressor side are one taker order. For each:

- ``mid_before``, ``spread_bps`` and ``depth``: from the last book strictly
  before the order (``depth`` is the visible quantity on the side it takes
  from: asks for a buy);
- ``immediate_bps``: the order's average price against ``mid_before``,
  signed so that paying up is positive;
- ``permanent_bps``: the mid of the first book at least ``horizon_ns`` after
  the order against ``mid_before``, signed the same way. An observation is
  complete only then, so it never uses data from after the time it is emitted;
- ``temporary_bps = immediate_bps - permanent_bps``.

Model (:class:`MarketImpactModel`, scikit-learn contract). With participation
``x = quantity / depth``::

    expected_bps  = spread_bps / 2 + a_i * x ** b_i      (the immediate cost)
    permanent_bps = a_p * x ** b_p
    temporary_bps = expected_bps - permanent_bps

On the bundled BTCUSDT session the permanent move one second after a taker
order exceeds the immediate cost on average (order flow keeps pushing the
same way and cleared levels are not refilled at once), so the fitted
temporary part is negative there; that is what the data shows, not a sign
convention.

Each exponent ``b`` is chosen by cross-validated grid search
(``GridSearchCV`` over :class:`PowerLawRegressor`, time-ordered folds), which
includes the square-root law ``b = 0.5``; each coefficient ``a`` is the least
squares fit for that exponent. Confidence intervals come from a seeded
bootstrap of the coefficients.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from keel.core.errors import KeelError
from keel.core.messages import BookUpdated, TradeTick
from keel.core.orders import OrderSide

OBSERVATION_COLUMNS = (
    "ts_event",
    "side",
    "quantity",
    "average_price",
    "mid_before",
    "spread_bps",
    "depth",
    "mid_after",
    "immediate_bps",
    "permanent_bps",
    "temporary_bps",
)
_CALIBRATION_COLUMNS = ("quantity", "depth", "spread_bps", "immediate_bps", "permanent_bps")
"""The observation columns :meth:`MarketImpactModel.fit` reads."""


class ImpactObservation(NamedTuple):
    """One taker order and the impact it had (``side`` is +1 buy, -1 sell)."""

    ts_event: int
    side: int
    quantity: float
    average_price: float
    mid_before: float
    spread_bps: float
    depth: float
    mid_after: float
    immediate_bps: float
    permanent_bps: float
    temporary_bps: float


class _Pending:
    __slots__ = ("depth", "mid_before", "notional", "quantity", "side", "spread_bps", "ts")

    def __init__(self, ts: int, side: int, mid: float, spread_bps: float, depth: float) -> None:
        self.ts = ts
        self.side = side
        self.mid_before = mid
        self.spread_bps = spread_bps
        self.depth = depth
        self.quantity = 0.0
        self.notional = 0.0


class ImpactCollector:
    """Turn a time-ordered stream of books and trades into impact observations (see module doc).

    Parameters
    ----------
    horizon_ns
        How long after an order its permanent impact is read.
    """

    def __init__(self, horizon_ns: int = 1_000_000_000) -> None:
        if horizon_ns <= 0:
            raise ValueError(f"impact horizon must be positive, got {horizon_ns} ns")
        self.horizon_ns = horizon_ns
        self.observations: list[ImpactObservation] = []
        self._book: tuple[int, float, float, float, float] | None = None
        self._earlier_book: tuple[int, float, float, float, float] | None = None
        self._order: _Pending | None = None
        self._waiting: deque[_Pending] = deque()

    def on_book(self, book: BookUpdated) -> list[ImpactObservation]:
        """Note a book; return the observations it completes."""
        bid, ask = book.bids[0][0], book.asks[0][0]
        mid = (bid + ask) * 0.5
        ask_depth = sum(quantity for _, quantity in book.asks)
        bid_depth = sum(quantity for _, quantity in book.bids)
        return self.update_book(book.ts_event, mid, (ask - bid) / mid * 1e4, bid_depth, ask_depth)

    def update_book(
        self, ts: int, mid: float, spread_bps: float, bid_depth: float, ask_depth: float
    ) -> list[ImpactObservation]:
        """Note a book given as plain values (see :meth:`on_book`)."""
        self._close_order()
        current = self._book
        if current is not None and current[0] < ts:
            self._earlier_book = current
        self._book = (ts, mid, spread_bps, bid_depth, ask_depth)
        done: list[ImpactObservation] = []
        waiting = self._waiting
        while waiting and waiting[0].ts + self.horizon_ns <= ts:
            done.append(_complete(waiting.popleft(), mid))
        self.observations.extend(done)
        return done

    @property
    def visible_depth(self) -> tuple[float, float] | None:
        """Return the (bid, ask) visible quantity of the last book, or None before one."""
        return None if self._book is None else (self._book[3], self._book[4])

    def on_trade(self, trade: TradeTick) -> None:
        """Add a trade to the current taker order (or start a new one)."""
        self.update_trade(trade.ts_event, trade.price, trade.quantity, trade.aggressor_side is OrderSide.BUY)

    def update_trade(self, ts: int, price: float, quantity: float, buyer_aggressor: bool) -> None:
        """Add a trade given as plain values (see :meth:`on_trade`)."""
        side = 1 if buyer_aggressor else -1
        order = self._order
        if order is None or order.ts != ts or order.side != side:
            self._close_order()
            book = self._book if self._book is not None and self._book[0] < ts else self._earlier_book
            if book is None:
                return
            _, mid, spread_bps, bid_depth, ask_depth = book
            order = self._order = _Pending(ts, side, mid, spread_bps, ask_depth if side > 0 else bid_depth)
        order.quantity += quantity
        order.notional += price * quantity

    def _close_order(self) -> None:
        if self._order is not None:
            self._waiting.append(self._order)
            self._order = None

    def frame(self) -> pd.DataFrame:
        """Return the completed observations as a frame with :data:`OBSERVATION_COLUMNS`."""
        return pd.DataFrame(self.observations, columns=list(OBSERVATION_COLUMNS))


def _complete(order: _Pending, mid_after: float) -> ImpactObservation:
    average = order.notional / order.quantity
    immediate = order.side * (average - order.mid_before) / order.mid_before * 1e4
    permanent = order.side * (mid_after - order.mid_before) / order.mid_before * 1e4
    return ImpactObservation(
        order.ts,
        order.side,
        order.quantity,
        average,
        order.mid_before,
        order.spread_bps,
        order.depth,
        mid_after,
        immediate,
        permanent,
        immediate - permanent,
    )


def impact_observations_batch(
    books: pd.DataFrame, trades: pd.DataFrame, horizon_ns: int = 1_000_000_000
) -> pd.DataFrame:
    """Compute impact observations of a whole session with pandas (the reference of :class:`ImpactCollector`).

    Parameters
    ----------
    books
        ``ts_event``, ``mid``, ``spread_bps``, ``bid_depth``, ``ask_depth``, in time order.
    trades
        ``ts_event``, ``price``, ``quantity``, ``buyer_aggressor``, in time order.

    Returns
    -------
    DataFrame
        One row per completed taker order, columns :data:`OBSERVATION_COLUMNS`.
    """
    trades = trades.assign(
        side=np.where(trades["buyer_aggressor"], 1, -1), notional=trades["price"] * trades["quantity"]
    )
    new_order = (trades["ts_event"] != trades["ts_event"].shift()) | (trades["side"] != trades["side"].shift())
    orders = (
        trades.groupby(new_order.cumsum())
        .agg(
            ts_event=("ts_event", "first"),
            side=("side", "first"),
            quantity=("quantity", "sum"),
            notional=("notional", "sum"),
        )
        .reset_index(drop=True)
    )
    last_books = books.drop_duplicates("ts_event", keep="last")
    before = pd.merge_asof(orders, last_books, on="ts_event", allow_exact_matches=False, direction="backward")
    before = before.dropna(subset=["mid"]).reset_index(drop=True)
    due = before.assign(due=before["ts_event"] + horizon_ns)
    after = pd.merge_asof(
        due.sort_values("due")[["due"]].reset_index(),
        books.drop_duplicates("ts_event", keep="first").rename(columns={"ts_event": "due", "mid": "mid_after"})[
            ["due", "mid_after"]
        ],
        on="due",
        direction="forward",
    ).set_index("index")
    before["mid_after"] = after["mid_after"]
    before = before.dropna(subset=["mid_after"])
    average = before["notional"] / before["quantity"]
    immediate = before["side"] * (average - before["mid"]) / before["mid"] * 1e4
    permanent = before["side"] * (before["mid_after"] - before["mid"]) / before["mid"] * 1e4
    return pd.DataFrame(
        {
            "ts_event": before["ts_event"].to_numpy(np.int64),
            "side": before["side"].to_numpy(np.int64),
            "quantity": before["quantity"],
            "average_price": average,
            "mid_before": before["mid"],
            "spread_bps": before["spread_bps"],
            "depth": np.where(before["side"] > 0, before["ask_depth"], before["bid_depth"]),
            "mid_after": before["mid_after"],
            "immediate_bps": immediate,
            "permanent_bps": permanent,
            "temporary_bps": immediate - permanent,
        }
    ).reset_index(drop=True)


class PowerLawRegressor(RegressorMixin, BaseEstimator):
    """``y = coefficient * x ** exponent`` with the exponent fixed and the coefficient by least squares.

    Parameters
    ----------
    exponent
        The power of ``x`` (0.5 is the square-root law).
    """

    def __init__(self, exponent: float = 0.5) -> None:
        self.exponent = exponent

    def fit(self, X: Any, y: Any) -> PowerLawRegressor:
        """Fit the coefficient; ``X`` has one column, the participation ``x >= 0``."""
        X, y = validate_data(self, X, y, ensure_min_samples=2)
        if (X < 0).any():
            raise ValueError("participation must be >= 0")
        features = X[:, 0] ** self.exponent
        denominator = float(features @ features)
        self.coefficient_ = float(features @ y) / denominator if denominator > 0 else 0.0
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Return ``coefficient * x ** exponent``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.coefficient_ * X[:, 0] ** self.exponent


@dataclass(frozen=True, slots=True)
class MarketConditions:
    """The book an order would meet: spread (bps) and visible depth on the side it takes (base units)."""

    spread_bps: float
    depth: float


@dataclass(frozen=True, slots=True)
class ImpactEstimate:
    """Expected impact of an order in bps (positive: cost), with a confidence interval.

    ``expected_bps = temporary_bps + permanent_bps``; ``lower_bps`` and
    ``upper_bps`` bound it at the model's confidence level.
    """

    order_size: float
    participation: float
    expected_bps: float
    lower_bps: float
    upper_bps: float
    temporary_bps: float
    permanent_bps: float
    confidence: float


class ImpactModelNotFittedError(KeelError):
    """The impact model has no calibration yet: call ``fit`` with observations first."""


class MarketImpactModel(BaseEstimator):
    """Power-law temporary and permanent impact, calibrated on observed taker orders (see module doc).

    Parameters
    ----------
    exponents
        Candidate exponents for the grid search.
    n_splits
        Time-ordered cross-validation folds.
    n_bootstrap
        Bootstrap resamples for the confidence interval.
    confidence
        Confidence level of the interval.
    random_state
        Seed of the bootstrap.

    Attributes
    ----------
    immediate_exponent_, immediate_coefficient_, permanent_exponent_, permanent_coefficient_ : float
        The fitted laws.
    immediate_coefficients_, permanent_coefficients_ : ndarray
        Bootstrap coefficients.
    immediate_bounds_ : tuple of float
        The bootstrap percentiles of the immediate coefficient at ``confidence``.
    n_observations_ : int
        Observations used.
    """

    def __init__(
        self,
        exponents: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        n_splits: int = 5,
        n_bootstrap: int = 200,
        confidence: float = 0.95,
        random_state: int = 7,
    ) -> None:
        self.exponents = exponents
        self.n_splits = n_splits
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, observations: pd.DataFrame, y: None = None) -> MarketImpactModel:
        """Calibrate on observations (a frame with :data:`OBSERVATION_COLUMNS`).

        Raises
        ------
        ValueError
            If a column of :data:`OBSERVATION_COLUMNS` the calibration reads is
            missing, or with fewer than ``2 * n_splits`` usable observations.
        """
        missing = [c for c in _CALIBRATION_COLUMNS if c not in observations.columns]
        if missing:
            raise ValueError(
                f"impact observations miss the columns {', '.join(missing)}; "
                f"expected those of OBSERVATION_COLUMNS ({', '.join(OBSERVATION_COLUMNS)})"
            )
        usable = observations[(observations["depth"] > 0) & np.isfinite(observations["immediate_bps"])]
        if len(usable) < 2 * self.n_splits:
            raise ValueError(f"impact calibration needs at least {2 * self.n_splits} observations, got {len(usable)}")
        participation = (usable["quantity"] / usable["depth"]).to_numpy()[:, None]
        immediate_excess = (usable["immediate_bps"] - usable["spread_bps"] / 2).to_numpy()
        permanent = usable["permanent_bps"].to_numpy()
        random = check_random_state(self.random_state)
        self.immediate_exponent_, self.immediate_coefficient_, self.immediate_coefficients_ = self._fit_law(
            participation, immediate_excess, random
        )
        self.permanent_exponent_, self.permanent_coefficient_, self.permanent_coefficients_ = self._fit_law(
            participation, permanent, random
        )
        tail = (1 - self.confidence) / 2 * 100
        self.immediate_bounds_ = tuple(
            float(v) for v in np.percentile(self.immediate_coefficients_, [tail, 100 - tail])
        )
        self.n_observations_ = len(usable)
        return self

    def _fit_law(self, x: np.ndarray, y: np.ndarray, random: np.random.RandomState) -> tuple[float, float, np.ndarray]:
        search = GridSearchCV(
            PowerLawRegressor(),
            {"exponent": list(self.exponents)},
            cv=TimeSeriesSplit(n_splits=self.n_splits),
            scoring="neg_mean_squared_error",
        ).fit(x, y)
        exponent = float(search.best_params_["exponent"])
        features = x[:, 0] ** exponent
        coefficients = np.empty(self.n_bootstrap)
        for draw in range(self.n_bootstrap):
            sample = random.randint(0, len(y), len(y))
            denominator = float(features[sample] @ features[sample])
            coefficients[draw] = float(features[sample] @ y[sample]) / denominator if denominator > 0 else 0.0
        return exponent, float(search.best_estimator_.coefficient_), coefficients

    def estimate_market_impact(
        self, order_size: float, market_conditions: MarketConditions | Mapping[str, float]
    ) -> ImpactEstimate:
        """Return the expected impact of an order of ``order_size`` base units.

        Parameters
        ----------
        order_size
            Order quantity, base units (> 0).
        market_conditions
            ``spread_bps`` and ``depth`` (visible quantity on the side the
            order takes), as :class:`MarketConditions` or a mapping.

        Raises
        ------
        ImpactModelNotFittedError
            Before :meth:`fit`.
        ValueError
            If the size or depth is not positive or the spread is negative.
        """
        if not hasattr(self, "n_observations_"):
            raise ImpactModelNotFittedError(
                "the impact model has no calibration yet: call fit() with observations first"
            )
        if isinstance(market_conditions, Mapping):
            market_conditions = MarketConditions(
                float(market_conditions["spread_bps"]), float(market_conditions["depth"])
            )
        if not order_size > 0 or not market_conditions.depth > 0 or not market_conditions.spread_bps >= 0:
            raise ValueError(
                f"order size ({order_size}) and depth ({market_conditions.depth}) must be positive and "
                f"spread ({market_conditions.spread_bps} bps) non-negative"
            )
        participation = order_size / market_conditions.depth
        half_spread = market_conditions.spread_bps / 2
        immediate_feature = participation**self.immediate_exponent_
        expected = half_spread + self.immediate_coefficient_ * immediate_feature
        permanent = self.permanent_coefficient_ * participation**self.permanent_exponent_
        # The bound is monotone in the coefficient (the feature is >= 0), so the
        # percentiles of the bootstrap coefficients give those of the impact.
        lower = half_spread + self.immediate_bounds_[0] * immediate_feature
        upper = half_spread + self.immediate_bounds_[1] * immediate_feature
        return ImpactEstimate(
            order_size=order_size,
            participation=participation,
            expected_bps=expected,
            lower_bps=float(lower),
            upper_bps=float(upper),
            temporary_bps=expected - permanent,
            permanent_bps=permanent,
            confidence=self.confidence,
        )
