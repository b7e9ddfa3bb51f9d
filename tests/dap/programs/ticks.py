"""A StateGraph that ticks for a while (each tick sleeps), for pausing it from outside."""

import time

from midrun.graph.stategraph import END, StateGraph


def tick(state):
    time.sleep(0.02)
    return {"n": state["n"] + 1}


builder = StateGraph()
builder.add_node("tick", tick)
builder.set_entry_point("tick")
builder.add_conditional_edges("tick", lambda s: "again" if s["n"] < 5000 else "done",
                              {"again": "tick", "done": END})
graph = builder.compile(recursion_limit=6000)
inputs = {"n": 0}
