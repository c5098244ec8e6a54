"""Device protocols behind a `SerialLink`: the counter bus ("68") and the line-protocol port.

- `counter_bus.CounterBus`: keypads, evaluators and window screens on one RS-485 bus.
- `dispenser.DispenserPort`: a ticket dispenser (or another line-protocol device).
- `keypad` and `counter_view`: pure rules (key -> command, what a counter's devices show).
"""

from drivers.devices.base import DevicePort
from drivers.devices.counter_bus import CounterBus
from drivers.devices.dispenser import DispenserPort
from drivers.devices.health import DeviceHealth

__all__ = ["CounterBus", "DeviceHealth", "DevicePort", "DispenserPort"]
