"""Driver liveness for the records: an execution whose driver is gone shows as interrupted."""

from taskpoint._process import hostname, process_alive, process_token

__all__ = ["hostname", "process_alive", "process_token"]
