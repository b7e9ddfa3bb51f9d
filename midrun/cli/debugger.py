"""``midrun debug FILE|JOB_ID``: the terminal debugger, over the same targets as the Debug
Adapter Protocol server (:mod:`midrun.cli.targets`).

    (midrun) break score if round >= 1      (midrun) continue / next / step / finish
    (midrun) break KSampler@12               (midrun) print inputs.cfg * 2
    (midrun) log revise round is {round}     (midrun) inputs / outputs / state / diff
    (midrun) catch                           (midrun) set 3.cfg 5.5 / undo
    (midrun) info breakpoints / delete 2     (midrun) pause (or Ctrl-C) / quit

Where the run stops is printed as ``stopped at node 3 (KSampler) step 12/30
(breakpoint 1)``. Readline keeps a history (``~/.midrun_debug_history``) and completes
commands and node names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from midrun.cli.targets import (
    AttachTarget,
    BreakpointSpec,
    LaunchTarget,
    TargetError,
    describe,
    parse_value,
    tensor_text,
)
from midrun.core.errors import MidrunError
from midrun.debug.controller import PauseContext
from midrun.debug.inspector import is_tensor

COMMANDS = ("break", "log", "catch", "info", "delete", "continue", "next", "step", "finish",
            "pause", "print", "inputs", "outputs", "state", "diff", "set", "undo", "help",
            "quit")  # fmt: skip
ALIASES = {"b": "break", "c": "continue", "n": "next", "s": "step", "p": "print", "q": "quit",
           "exit": "quit", "bt": "where", "where": "where"}  # fmt: skip
HISTORY = Path(os.environ.get("MIDRUN_DEBUG_HISTORY", Path.home() / ".midrun_debug_history"))


@dataclass(slots=True)
class Entry:
    """A breakpoint as typed, and what became of it."""

    number: int
    spec: BreakpointSpec
    text: str
    verified: bool = False
    message: str = ""
    node_id: str | None = None
    bp_id: str | None = None  # the target's breakpoint


class Debugger:
    """One terminal session over a target: read a command, do it, print the answer."""

    def __init__(self, target: LaunchTarget | AttachTarget, out: TextIO = sys.stdout) -> None:
        self.target = target
        self.out = out
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        target.listeners.append(lambda event, data: self.events.put((event, dict(data))))
        self.entries: list[Entry] = []
        self._next = 0
        self.started = False
        self._entry = False
        self.ended = False
        self.edits: list[tuple[str, str, Any]] = []  # (node, input, the value it replaced)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- running and waiting -------------------------------------------------------------

    @contextlib.contextmanager
    def _ctrl_c_pauses(self) -> Iterator[None]:
        previous = signal.getsignal(signal.SIGINT)
        with contextlib.suppress(ValueError):  # not the main thread: no Ctrl-C handling
            signal.signal(signal.SIGINT, lambda *_: self._interrupt())
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, previous)

    def wait(self) -> None:
        """Until the run stops or ends, printing logpoints as they come. Ctrl-C pauses."""
        with self._ctrl_c_pauses():
            while True:
                event, data = self.events.get()
                if event == "output":
                    self.say(f"log: {data.get('message')}")
                elif event == "breakpoint":
                    self.say(f"breakpoint disabled: {data.get('reason')}")
                elif event == "paused":
                    self._where(stopped=True)
                    return
                elif event == "completed":
                    self._ended(data)
                    return

    def _interrupt(self) -> None:
        self.say("pausing…")
        with contextlib.suppress(MidrunError):
            self.target.pause()

    def _ended(self, data: dict[str, Any]) -> None:
        self.ended = True
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        status = data.get("status", "completed")
        self.say(f"run {status}" + (f": {error}" if error else ""))

    def _where(self, *, stopped: bool = False, why: str | None = None) -> None:
        context = self.target.context
        if context is None:
            self.say("the run is not stopped" if self.started else "the run has not started")
            return
        self.say(f"{'stopped at ' if stopped else ''}{describe(context)} "
                 f"({why or self._why(context)})")  # fmt: skip

    def _why(self, context: PauseContext) -> str:
        if context.error:
            return f"error: {context.error}"
        numbers = [str(e.number) for e in self.entries if e.bp_id in context.breakpoint_ids]
        entry, self._entry = self._entry, False
        if numbers:
            return f"breakpoint {', '.join(numbers)}"
        return "entry" if entry else context.reason.value

    def _go(self, command: str) -> None:
        if self.ended:
            self.say("the run has ended")
            return
        if self.started and self.target.context is None:
            self.say("the run is not stopped; 'pause' (or Ctrl-C) stops it")
            return
        with self._ctrl_c_pauses():
            if not self.started:
                self.started = True
                self._entry = command != "continue"  # the first stop is the entry
                self.target.start(stop_on_entry=self._entry)
            else:
                self.target.command(command)
            if command == "continue":
                self.say("running (Ctrl-C pauses)")
            self.wait()

    # -- breakpoints ---------------------------------------------------------------------

    def _sync(self) -> None:
        """Hand every breakpoint typed to the target (one group, replaced whole)."""
        results = self.target.replace_breakpoints("terminal", [e.spec for e in self.entries])
        for entry, result in zip(self.entries, results, strict=True):
            entry.verified, entry.message, entry.node_id = (result.verified, result.message,
                                                            result.node_id)  # fmt: skip
            entry.bp_id = result.breakpoint.id if result.breakpoint else None

    def _add(self, spec: BreakpointSpec, text: str) -> None:
        self._next += 1
        entry = Entry(self._next, spec, text)
        self.entries.append(entry)
        self._sync()
        if entry.verified:
            where = f"node {entry.node_id}" if entry.node_id else "node errors"
            self.say(f"breakpoint {entry.number}: {text} (at {where})")
        else:
            self.entries.remove(entry)
            self._sync()
            self.say(f"not set: {entry.message}")

    def do_break(self, rest: str) -> None:
        node, _, condition = rest.partition(" if ")
        if not node.strip():
            self.say("usage: break NODE [if CONDITION]  (NODE@STEP for a sampler step)")
            return
        self._add(BreakpointSpec(node=node.strip(), condition=condition.strip() or None),
                  rest.strip())

    def do_log(self, rest: str) -> None:
        node, _, message = rest.strip().partition(" ")
        if not node or not message:
            self.say("usage: log NODE MESSAGE  (MESSAGE may hold {expressions})")
            return
        self._add(BreakpointSpec(node=node, log_message=message), f"log {rest.strip()}")

    def do_catch(self, rest: str) -> None:
        kinds = tuple(k.strip() for k in rest.split(",") if k.strip())
        self._add(BreakpointSpec(errors=True, exception_types=kinds),
                  "catch" + (f" {', '.join(kinds)}" if kinds else ""))

    def do_info(self, rest: str) -> None:
        if rest.strip() not in ("breakpoints", "b", "break"):
            self.say("usage: info breakpoints")
            return
        if not self.entries:
            self.say("no breakpoints")
        for entry in self.entries:
            self.say(f"{entry.number}  {entry.text}")

    def do_delete(self, rest: str) -> None:
        wanted = {int(n) for n in rest.split() if n.isdigit()}
        kept = [e for e in self.entries if wanted and e.number not in wanted]
        gone = len(self.entries) - len(kept)
        self.entries = kept
        self._sync()
        self.say(f"deleted {gone} breakpoint{'s' if gone != 1 else ''}")

    # -- values --------------------------------------------------------------------------

    def do_print(self, rest: str) -> None:
        if not rest.strip():
            self.say("usage: print EXPRESSION")
            return
        self.say(show(self.target.evaluate(rest.strip())))

    def _scope(self, *names: str) -> None:
        found = dict(self.target.scopes())
        for name in names:
            if name in found:
                self.say(f"{name}:")
                values = found[name] or {}
                items = values.items() if isinstance(values, dict) else enumerate(values)
                for key, value in items:
                    self.say(f"  {key} = {show(value)}")
                return
        self.say(f"no {names[0].lower()} here" if self.target.context else "not stopped")

    def do_inputs(self, rest: str) -> None:
        self._scope("Inputs", "State")

    def do_outputs(self, rest: str) -> None:
        self._scope("Outputs")

    def do_state(self, rest: str) -> None:
        self._scope("State", "Sampler", "Job")

    def do_diff(self, rest: str) -> None:
        session = getattr(self.target, "session", None)
        if session is None:
            self.say("diff needs a launched program (its snapshots)")
            return
        snapshots = session.snapshots()
        ids = [int(n) for n in rest.split() if n.isdigit()]
        if len(ids) != 2:
            if len(snapshots) < 2:
                self.say("diff needs two snapshots; the run has made "
                         f"{len(snapshots)}")  # fmt: skip
                return
            ids = [snapshots[-2].id, snapshots[-1].id]
        diff = session.diff(ids[0], ids[1]).to_json()
        self.say(f"snapshot {ids[0]} -> {ids[1]}:")
        for kind in ("added", "removed", "changed"):
            for key, value in (diff.get(kind) or {}).items():
                if kind == "changed" and isinstance(value, dict) and "old" in value:
                    self.say(f"  changed {key}: {preview(value['old'])} -> "
                             f"{preview(value['new'])}")  # fmt: skip
                else:
                    self.say(f"  {kind} {key}: {preview(value)}")
        if not any(diff.get(k) for k in ("added", "removed", "changed")):
            self.say("  (no change)")

    def do_set(self, rest: str) -> None:
        target, _, text = rest.strip().partition(" ")
        node_id, _, name = target.partition(".")
        if not node_id or not name or not text:
            self.say("usage: set NODE.INPUT VALUE  (VALUE as JSON: 5.5, \"a cat\")")
            return
        context = self.target.context
        if context is None:
            self.say("the run is not stopped")
            return
        scopes = dict(self.target.scopes())
        old = (scopes.get("Inputs") or {}).get(name) if context.node_id == node_id else None
        value = parse_value(text)
        asyncio.run(self.target.set_input(node_id, name, value))
        self.edits.append((node_id, name, old))
        self.say(f"{node_id}.{name} = {show(value)} from the next step")
        if isinstance(self.target, LaunchTarget):
            self._drain_stop()

    def _drain_stop(self) -> None:
        """A launched run held again after an edit says so: take that stop."""
        with contextlib.suppress(queue.Empty):
            while True:
                event, _ = self.events.get(timeout=5)
                if event == "paused":
                    self._where(stopped=True, why="after the edit")
                    return

    def do_undo(self, rest: str) -> None:
        if not self.edits:
            self.say("no edit to undo")
            return
        node_id, name, old = self.edits.pop()
        if isinstance(self.target, AttachTarget):
            self.target.undo()
            self.say(f"{node_id}.{name}: the edit is withdrawn")
            return
        if old is None:
            self.say(f"{node_id}.{name}: its previous value is not known here")
            return
        asyncio.run(self.target.set_input(node_id, name, old))
        self.say(f"{node_id}.{name} = {show(old)} again")
        self._drain_stop()

    # -- the loop ------------------------------------------------------------------------

    def handle(self, line: str) -> bool:
        """Do one command; False when the session is over."""
        words = line.strip().split(maxsplit=1)
        if not words:
            return True
        command, rest = ALIASES.get(words[0], words[0]), words[1] if len(words) > 1 else ""
        try:
            if command == "quit":
                if not self.ended and self.started and isinstance(self.target, LaunchTarget):
                    self.target.terminate()
                return False
            if command == "help":
                self.say(__doc__.split("\n\n", 1)[1].split("\n\n")[0])
            elif command in ("continue", "next", "step", "finish"):
                self._go({"continue": "continue", "next": "step_over", "step": "step_into",
                          "finish": "step_out"}[command])  # fmt: skip
            elif command == "pause":
                # the prompt is back only while the run is held (or not started, or over):
                # a running one is paused with Ctrl-C
                self.say("the run is stopped already" if self.target.context is not None
                         else "the run is not running; 'next' stops it at its first node"
                         if not self.started else "the run has ended")  # fmt: skip
            elif command == "where":
                self._where()
            elif command in COMMANDS:
                getattr(self, f"do_{command}")(rest)
            else:
                self.say(f"unknown command {words[0]!r}; commands: {', '.join(COMMANDS)}")
        except MidrunError as exc:
            self.say(f"error: {exc.message}")
        except Exception as exc:  # a fault of the debugger's own: said, never fatal
            self.say(f"internal error: {type(exc).__name__}: {exc}")
        return True

    def completions(self, text: str, line: str) -> list[str]:
        words = line.split()
        if len(words) <= 1 and not line.endswith(" "):
            return [c for c in (*COMMANDS, *ALIASES) if c.startswith(text)]
        return [n for n in self.target.nodes if n.startswith(text)]

    def run(self, stdin: TextIO = sys.stdin) -> int:
        self.say(f"debugging {self.target.program.name}: nodes "
                 f"{', '.join(self.target.nodes[:40])}")  # fmt: skip
        self.say("set breakpoints, then 'continue' (or 'next' to stop at the first node); "
                 "'help' lists the commands")
        interactive = stdin.isatty()
        if interactive:
            self._readline()
        while True:
            try:
                line = input("(midrun) ") if interactive else stdin.readline()
            except EOFError:
                break
            except KeyboardInterrupt:
                self.say("\n(quit leaves)")
                continue
            if not interactive and not line:
                break
            if not self.handle(line):
                break
        if interactive:
            with contextlib.suppress(OSError):
                import readline

                readline.write_history_file(HISTORY)
        return 0

    def _readline(self) -> None:
        try:
            import readline
        except ImportError:
            return
        with contextlib.suppress(OSError):
            readline.read_history_file(HISTORY)
        readline.set_completer_delims(" \t")

        def complete(text: str, state: int) -> str | None:
            found = self.completions(text, readline.get_line_buffer())
            return found[state] + " " if state < len(found) else None

        readline.set_completer(complete)
        readline.parse_and_bind("tab: complete")


def show(value: Any) -> str:
    """A value on one line: tensors by shape and numbers, the rest as JSON or repr."""
    if is_tensor(value):
        return tensor_text(value, device=False)
    def inner(item: Any) -> str:
        return show(item) if is_tensor(item) else f"<{type(item).__name__}>"

    try:
        text = json.dumps(value, default=inner)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


def preview(summary: Any) -> str:
    """A snapshot's summary of a value (``{"type", "preview", ...}``) as its text."""
    if isinstance(summary, dict) and "preview" in summary:
        return str(summary["preview"])
    return show(summary)


def open_target(what: str, *, server: str | None, token: str | None, models_dir: str | None,
                output_dir: str, device: str) -> LaunchTarget | AttachTarget:  # fmt: skip
    """A program file to launch, or (with a server) a job id to attach to."""
    if Path(what).is_file():
        return LaunchTarget(what, models_dir=models_dir, output_dir=output_dir, device=device,
                            record_history=True)  # fmt: skip
    if server:
        return AttachTarget(server, what, token=token)
    raise TargetError(f"{what!r} is neither a program file nor (without --server) a job "
                      "to attach to; name the server with --server URL")  # fmt: skip


def main(args: Any) -> int:
    try:
        target = open_target(args.target, server=args.server, token=args.token,
                             models_dir=args.models_dir, output_dir=args.output_dir,
                             device=args.device)  # fmt: skip
    except MidrunError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return Debugger(target).run()

