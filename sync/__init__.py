"""MQTT sync to the mobile backend (../shared/spec/mqtt.md): connection, outbox pump,
retained live state, commands, and the AsyncAPI document (sync/asyncapi.yaml)."""

from .service import SyncHandle, SyncOptions, start_sync

__all__ = ["SyncHandle", "SyncOptions", "start_sync"]
