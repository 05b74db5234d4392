"""The record tests' fixtures: a real PostgreSQL server (:mod:`postgres_server`)."""
from postgres_server import postgres, postgres_db

__all__ = ["postgres", "postgres_db"]
