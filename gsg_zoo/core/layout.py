"""The names of everything gsg-zoo writes: an export folder's files and the repository's card folder.

Light (no torch, no timm): the export, card, hub and zoo modules all read their file names here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# An export folder (``gsg export``), as uploaded to the Hub.
CONFIG_FILE = "config.json"  # timm's config (architecture, pretrained_cfg), by timm.models.save_for_hf
WEIGHTS_FILE = "model.safetensors"  # the backbone's weights, timm parameter names
PROVENANCE_FILE = "gsg_export.json"  # architecture, method, source checkpoint, versions, reload check
RECIPE_FILE = "recipe.json"  # the training config stored in the checkpoint
RESULTS_FILE = "results.json"  # the run's summary.json plus results measured later
CARD_FILE = "README.md"  # the model card
CURVES_FILE = "curves.png"
CHECKSUMS_FILE = "checksums.sha256"  # sha256 of every other file, ``sha256sum -c`` format

# Files of the run directory copied into an export: run name -> export name.
RUN_FILES = {
    "summary.json": RESULTS_FILE,
    "metrics.jsonl": "metrics.jsonl",
    CURVES_FILE: CURVES_FILE,
    "config.yaml": "config.yaml",
}

PAPER_IDS = "arXiv:2503.09058"
PAPER_NAME = "Implicit Contrastive Representation Learning with Guided Stop-gradient"

# The repository's cards of the zoo's checkpoints: model_cards/NAME/README.md (a checkout only).
CARDS_DIR_NAME = "model_cards"


def read_json(path: Path) -> Any | None:
    """The parsed JSON file, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def checkout_cards_dir() -> Path | None:
    """``model_cards/`` of the source checkout this package runs from; None once installed.

    A checkout is recognised by ``model_cards/README.md`` beside the package folder, so an installed
    package (site-packages) never writes cards next to itself.
    """
    cards = Path(__file__).resolve().parents[2] / CARDS_DIR_NAME
    return cards if (cards / CARD_FILE).is_file() else None
