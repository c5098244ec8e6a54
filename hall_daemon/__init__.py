"""Hall edge daemon: queues, devices, screens, voice, receipts and MQTT sync for service halls."""

__version__ = "0.1.0"
