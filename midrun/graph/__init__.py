"""The workflow model: node type declarations, ComfyUI API and UI formats, validation,
parameters, and the StateGraph builder. Never imports torch."""
