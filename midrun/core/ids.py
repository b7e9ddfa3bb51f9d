"""Identifiers: run ids and prompt ids are random UUID4 strings, as in ComfyUI."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A fresh random id (UUID4, canonical text form)."""
    return str(uuid.uuid4())
