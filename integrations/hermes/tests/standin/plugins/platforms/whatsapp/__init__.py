from .adapter import register

__all__ = ["register"]
