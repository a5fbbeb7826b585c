"""Which model the app and the command line use when none is named.

Order: an explicit source (``--model``), the ``SBANET_MODEL`` environment variable (a local
checkpoint directory or a hub repo id), then the checkpoint shipped in ``sbanet/assets/``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SBANET_MODEL"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "sbanet-lite-landcover"


def default_model_source(explicit: str | None = None) -> str:
    """The checkpoint to load: ``explicit``, else ``$SBANET_MODEL``, else the shipped model.

    Raises ``ValueError`` when nothing is configured and the shipped checkpoint is missing.
    """
    if explicit:
        return explicit
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    if (SHIPPED_MODEL / "config.json").is_file():
        return str(SHIPPED_MODEL)
    raise ValueError(
        f"no model configured: pass --model PATH_OR_HUB_ID or set {ENV_VAR} "
        f"(the shipped checkpoint {SHIPPED_MODEL} is missing)"
    )
