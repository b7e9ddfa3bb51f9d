"""A StateGraph for the debugger tests: draft, score, then revise until the score is
high enough (a loop), then publish. ``fail`` in the inputs makes publish raise."""

from midrun.graph.stategraph import END, StateGraph


def draft(state):
    words = state["topic"].split()
    return {"text": " ".join(words), "round": 0}


def score(state):
    value = len(state["text"]) + 10 * state["round"]
    return {"score": value}


def revise(state):
    return {"text": state["text"] + " more", "round": state["round"] + 1}


def publish(state):
    if state.get("fail"):
        raise ValueError(f"cannot publish {state['text']!r}")
    return {"published": True}


graph = StateGraph()
graph.add_node("draft", draft)
graph.add_node("score", score)
graph.add_node("revise", revise)
graph.add_node("publish", publish)
graph.set_entry_point("draft")
graph.add_edge("draft", "score")
graph.add_conditional_edges("score", lambda s: "good" if s["score"] >= 40 else "again",
                            {"good": "publish", "again": "revise"})
graph.add_edge("revise", "score")
graph.add_edge("publish", END)

inputs = {"topic": "a red circle", "fail": False}
