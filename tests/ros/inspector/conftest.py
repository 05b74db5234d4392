"""Fixtures of the inspector's part tests: a real PostgreSQL server for the recording (:mod:`postgres_server`)."""
from postgres_server import postgres, postgres_db

__all__ = ["postgres", "postgres_db"]
