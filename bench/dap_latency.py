"""The Debug Adapter Protocol server's round trip per stop, over stdio as an editor uses it.

* stop_to_stopped_event_ms_p50 / _p99: a ``continue`` request sent -> the ``stopped``
  event of the next breakpoint received. Between the two the run does one trivial node,
  so this is the adapter's and the debugger's own cost: the response, the release of the
  held run, the next control point, the hold, the event crossing from the run's thread.
* variables_ms_p50 / _p99: ``scopes`` then ``variables`` of the held state (40 keys, a
  64x64 float tensor among them) -> the answer.

    python bench/dap_latency.py --json [--stops 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from report import emit, percentile  # bench/report.py (benchmarks run as scripts)

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = textwrap.dedent(
    """
    import torch
    from midrun.graph.stategraph import END, StateGraph

    def tick(state):
        return {"n": state["n"] + 1}

    builder = StateGraph()
    builder.add_node("tick", tick)
    builder.set_entry_point("tick")
    builder.add_conditional_edges("tick", lambda s: "again" if s["n"] < s["limit"] else "done",
                                  {"again": "tick", "done": END})
    graph = builder.compile(recursion_limit=LIMIT + 1)
    inputs = {"n": 0, "limit": LIMIT, "image": torch.zeros(64, 64),
              **{f"key{i}": [i, str(i)] for i in range(37)}}
    """
)


class Client:
    """A minimal DAP client over a child's stdio."""

    def __init__(self, command: list[str]) -> None:
        self.child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
        self.seq = 0

    def send(self, command: str, **arguments: Any) -> int:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command,
                           "arguments": arguments}).encode()  # fmt: skip
        assert self.child.stdin is not None
        self.child.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.child.stdin.flush()
        return self.seq

    def receive(self) -> dict[str, Any]:
        assert self.child.stdout is not None
        length = 0
        while True:
            line = self.child.stdout.readline()
            if not line:
                raise EOFError("the adapter closed its output")
            if not line.strip():
                break
            length = int(line.split(b":")[1])
        return json.loads(self.child.stdout.read(length))

    def until(self, *, event: str | None = None, response: int | None = None) -> dict[str, Any]:
        while True:
            message = self.receive()
            if message.get("event") == "terminated" and event != "terminated":
                raise RuntimeError(f"the run ended while waiting for {event or response}")
            if event is not None and message.get("event") == event:
                return message
            if response is not None and message.get("request_seq") == response:
                assert message["success"], message
                return message

    def request(self, command: str, **arguments: Any) -> dict[str, Any]:
        return self.until(response=self.send(command, **arguments))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stops", type=int, default=200)
    args = parser.parse_args()
    program = Path(tempfile.mkdtemp(prefix="midrun-dap-")) / "loop.py"
    program.write_text(PROGRAM.replace("LIMIT", str(args.stops + 10)))
    client = Client([sys.executable, "-m", "midrun.cli.main", "dap"])
    client.request("initialize", adapterID="bench")
    client.request("launch", program=str(program))
    client.until(event="initialized")
    client.request("setFunctionBreakpoints", breakpoints=[{"name": "tick"}])
    client.request("configurationDone")
    client.until(event="stopped")
    stops, reads = [], []
    for _ in range(args.stops):
        start = time.perf_counter()
        client.send("continue", threadId=1)
        client.until(event="stopped")
        stops.append(time.perf_counter() - start)
        start = time.perf_counter()
        scopes = client.request("scopes", frameId=1)["body"]["scopes"]
        found = client.request("variables",
                               variablesReference=scopes[0]["variablesReference"])  # fmt: skip
        reads.append(time.perf_counter() - start)
        assert len(found["body"]["variables"]) == 40, found
    client.send("disconnect")  # ends the run (its terminated event comes first)
    client.child.wait(30)
    ms = 1000.0
    emit({
        "stop_to_stopped_event_ms_p50": round(percentile(stops, 0.5) * ms, 2),
        "stop_to_stopped_event_ms_p99": round(percentile(stops, 0.99) * ms, 2),
        "variables_ms_p50": round(percentile(reads, 0.5) * ms, 2),
        "variables_ms_p99": round(percentile(reads, 0.99) * ms, 2),
        "stops": args.stops,
        "transport": "stdio",
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
