"""The store: everything entrega knows, in one SQL database (SQLite by default).

Only the controller process writes it. Every rollout transition is committed before its
actions are applied, so whatever crashes, the store says where each rollout stands.
"""

from entrega.store.database import Store

__all__ = ["Store"]
