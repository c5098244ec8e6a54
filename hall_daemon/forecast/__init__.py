"""Wait forecasts: the closed-form fallback and the learned, calibrated hall forecaster.

`queue_length_forecast` is the closed-form predictor every hall has from day one;
`HallForecaster` (built by `make_forecaster`) learns from the event log, simulates the hall
forward and corrects the simulation with boosted trees trained on the hall's own waits. Both
answer the `Forecaster` signature the screens, dispenser and MQTT use.
"""

from .closed_form import Z80, Forecast, Forecaster, queue_length_forecast
from .live import HallForecaster, make_forecaster

__all__ = [
    "Z80",
    "Forecast",
    "Forecaster",
    "HallForecaster",
    "make_forecaster",
    "queue_length_forecast",
]
