"""Reading a workflow document in whichever format it comes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from midrun.core.errors import WorkflowFormatError
from midrun.graph.registry import NodeRegistry
from midrun.graph.ui_format import ui_to_api
from midrun.graph.workflow import Workflow, is_api_format, is_ui_format


def load_workflow(document: Any, registry: NodeRegistry) -> Workflow:
    """An API-format workflow from an API document, a ``{"prompt": ...}`` body or a UI file."""
    if isinstance(document, Mapping) and "prompt" in document and is_api_format(document["prompt"]):
        document = document["prompt"]
    if is_ui_format(document):
        return ui_to_api(document, registry)
    if is_api_format(document):
        return Workflow.from_api(document)
    raise WorkflowFormatError(
        "Not a workflow: expected ComfyUI's API format {id: {class_type, inputs}} "
        "or a saved UI workflow with a nodes list"
    )


def read_workflow_file(path: str | Path, registry: NodeRegistry) -> Workflow:
    source = Path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"{source} is not valid JSON: {exc}") from exc
    return load_workflow(document, registry)
