"""A StateGraph whose second node raises, for stopping at node errors."""

from midrun.graph.stategraph import END, StateGraph


def load(state):
    return {"rows": [1, 2, 0]}


def divide(state):
    return {"ratios": [10 / r for r in state["rows"]]}


builder = StateGraph()
builder.add_node("load", load)
builder.add_node("divide", divide)
builder.set_entry_point("load")
builder.add_edge("load", "divide")
builder.add_edge("divide", END)
graph = builder
inputs = {}
