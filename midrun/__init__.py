"""midrun: a workflow engine for generative pipelines with live, step-level control.

Layers (imports go downward only; see docs/ARCHITECTURE.md):

    cli                 command line
    nodes               node types (pure-Python nodes; ComfyUI core declarations)
    engine, debug       executor + control points; debugging hooks
    graph               workflow model: parse, validate, UI->API, parameters, StateGraph
    core                ids, errors: no third-party imports
"""

__version__ = "0.1.0"
