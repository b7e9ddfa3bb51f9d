"""Breakpoints on jobs, and stepping a paused job.

A breakpoint belongs to a saved workflow (every job of it) or to one job. It is a row of
``breakpoints`` whose ``spec`` is the debugger's JSON form
(:class:`midrun.debug.breakpoints.Breakpoint`): a node, where on it (``before`` the node
starts, ``after`` it finishes, or at sampler ``step`` k), an optional condition in the
safe expression language, and optionally a log message, which makes it a logpoint (it
reports and never pauses). ``enabled`` lives in its own column.

A running job's hook holds the enabled breakpoints of its job and workflow (reloaded when
it polls its row) and matches them at each control point with the debugger's core
(:mod:`midrun.debug.stops`), as the in-process debugger does.

Stepping: :func:`request_step` resumes a paused job (``Jobs.resume``) with a one-shot
stop request stored on its row (``request = StepMode.command``: ``step_over``,
``step_into``, ``step_out``); the hook of the run that continues it takes the request at
its first point and stops where :meth:`midrun.debug.stops.Stepping.stops_at` says
(``paused_by = "step"``), subgraphs included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from midrun.core.errors import MidrunError
from midrun.core.events import EventKind
from midrun.core.ids import new_id
from midrun.debug.breakpoints import Breakpoint, BreakpointError
from midrun.debug.stops import StepMode
from midrun.jobs.records import Job
from midrun.store.schema import breakpoints, now

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

FIELDS = ("node_id", "position", "step", "condition", "log", "enabled")
POSITIONS = ("before", "after", "step")
MAX_EXPRESSION = 500  # characters of a condition or log message (they nest: keep them short)
MAX_STEP = 10**9


class BreakpointNotFound(MidrunError):
    type = "breakpoint_not_found"


# -- the stored form -------------------------------------------------------------------


def parse_spec(data: Mapping[str, Any]) -> Breakpoint:
    """A breakpoint from its API form ``{node_id, position?, step?, condition?, log?,
    enabled?}``; :class:`BreakpointError` says what is wrong with it. ``position`` is
    ``step`` when a step is named; ``step`` without one means every step (with a
    condition such as ``step >= 10``)."""
    if not isinstance(data, Mapping):
        raise BreakpointError("A breakpoint is a JSON object with at least a node_id")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BreakpointError(f"Unknown breakpoint fields {unknown}; allowed: {list(FIELDS)}")
    node_id = data.get("node_id")
    if not isinstance(node_id, str) or not node_id:
        raise BreakpointError("A breakpoint needs node_id: the id of a node (a string)")
    step = _optional(data, "step", int, "an integer >= 1 (the sampler step to stop at)")
    condition = _optional(data, "condition", str, "an expression such as 'step >= 10'")
    log = _optional(data, "log", str, "a message such as 'seed is {seed}'")
    enabled = _optional(data, "enabled", bool, "true or false")
    position = _optional(data, "position", str, f"one of {', '.join(POSITIONS)}")
    if position is None:
        position = "step" if step is not None else "before"
    if position not in POSITIONS:
        raise BreakpointError(f"position {position!r} is not one of {', '.join(POSITIONS)}")
    for name, text in (("condition", condition), ("log", log)):
        if text is not None and (len(text) > MAX_EXPRESSION or "\x00" in text):
            raise BreakpointError(f"{name} is at most {MAX_EXPRESSION} characters, without NUL",
                                  field=name)  # fmt: skip
    if step is not None and not 1 <= step <= MAX_STEP:
        raise BreakpointError(f"step must be >= 1 (and at most {MAX_STEP}), got {step}",
                              field="step")  # fmt: skip
    if step is not None and position != "step":
        raise BreakpointError(f"step needs position 'step', not {position!r}", field="step")
    every = 1 if position == "step" and step is None else None  # every step (a condition)
    try:
        return Breakpoint.create(
            node_id=node_id, position=position, step=step, every=every,
            condition=condition or None, log_message=log,
            enabled=True if enabled is None else enabled, id=new_id(),
        )  # fmt: skip
    except RecursionError:
        raise BreakpointError("The condition or log message nests too deeply") from None


CANVAS_PROPERTY = "midrun.breakpoints"


def from_canvas(document: Any, node_ids: Iterable[str]) -> list[Breakpoint]:
    """The breakpoints a canvas workflow (UI format, as the frontend sends it in
    ``extra_data.extra_pnginfo.workflow``) keeps on its nodes: a list of breakpoint specs
    without ``node_id`` in each node's ``properties["midrun.breakpoints"]``. Nodes the
    job does not run (muted, bypassed, notes) are skipped; a malformed spec is refused
    with its node named."""
    if not isinstance(document, Mapping) or not isinstance(document.get("nodes"), list):
        return []
    wanted, found = set(node_ids), []
    for node in document["nodes"]:
        if not isinstance(node, Mapping) or not isinstance(node.get("properties"), Mapping):
            continue
        specs = node["properties"].get(CANVAS_PROPERTY)
        node_id = str(node.get("id"))
        if specs is None or node_id not in wanted:
            continue
        if not isinstance(specs, list):
            raise BreakpointError(f"Node {node_id}: {CANVAS_PROPERTY} must be a list",
                                  node_id=node_id)  # fmt: skip
        for spec in specs:
            if not isinstance(spec, Mapping):
                raise BreakpointError(f"Node {node_id}: a breakpoint is a JSON object",
                                      node_id=node_id)  # fmt: skip
            try:
                found.append(parse_spec({**spec, "node_id": node_id}))
            except BreakpointError as exc:
                raise BreakpointError(f"Node {node_id}: {exc.message}", node_id=node_id) from None
    return found


def _optional(data: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    value = data.get(name)
    if value is None:
        return None
    wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    if wrong:
        raise BreakpointError(f"{name} must be {what}, got {value!r}", field=name)
    return value


def public(row: Any) -> dict[str, Any]:
    """A stored breakpoint as the API shows it."""
    spec = row.spec or {}
    return {
        "id": row.id,
        "job_id": row.job_id,
        "workflow_id": row.workflow_id,
        "node_id": spec.get("node_id"),
        "position": spec.get("position"),
        "step": spec.get("step"),
        "condition": spec.get("condition"),
        "log": spec.get("log_message"),
        "enabled": bool(row.enabled),
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def _stored(row: Any) -> Breakpoint:
    bp = Breakpoint.from_json({**row.spec, "id": row.id})
    bp.enabled = bool(row.enabled)
    return bp


# -- CRUD --------------------------------------------------------------------------------


def create(
    service: Jobs,
    data: Mapping[str, Any],
    *,
    job_id: str | None = None,
    workflow_id: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Store a breakpoint on one job or on every job of a saved workflow."""
    if (job_id is None) == (workflow_id is None):
        raise BreakpointError("A breakpoint belongs to exactly one job or one workflow")
    bp = parse_spec(data)
    nodes = _nodes_of(service, job_id, workflow_id)
    check_nodes(bp, nodes, f"job {job_id}" if job_id else f"workflow {workflow_id}")
    with service.db.begin() as conn:
        insert_breakpoint(service, conn, bp, job_id=job_id, workflow_id=workflow_id,
                          actor=actor)  # fmt: skip
        row = _row(conn, bp.id)
    _poke(service, job_id)
    return public(row)


def check_nodes(bp: Breakpoint, nodes: set[str] | None, where: str) -> None:
    """Refuses a breakpoint on a node that ``nodes`` (None: not known) does not have."""
    if nodes is not None and bp.node_id not in nodes:
        raise BreakpointError(
            f"No node {bp.node_id!r} in {where}; its nodes are {', '.join(sorted(nodes))}",
            node_id=bp.node_id,
        )


def job_nodes(kind: str, workflow: Mapping[str, Any]) -> set[str] | None:
    """The node ids of a job's workflow (None for a state graph job: not known here)."""
    return set(workflow) if kind == "workflow" else None


def insert_breakpoint(service: Jobs, conn: Connection, bp: Breakpoint, *,
                      job_id: str | None = None, workflow_id: str | None = None,
                      actor: str | None = None) -> None:  # fmt: skip
    """Store ``bp`` on a job or a workflow, in the caller's transaction, and log it."""
    bp.workflow_id, bp.run_id = workflow_id, job_id
    conn.execute(insert(breakpoints), {
        "id": bp.id, "workflow_id": workflow_id, "job_id": job_id, "spec": bp.to_json(),
        "enabled": bp.enabled, "created_at": now()})  # fmt: skip
    service.store.record(conn, job_id, EventKind.BREAKPOINT_SET, actor=actor, node_id=bp.node_id,
                        breakpoint_id=bp.id, workflow_id=workflow_id)  # fmt: skip


def _nodes_of(service: Jobs, job_id: str | None, workflow_id: str | None) -> set[str] | None:
    """The node ids a breakpoint may name (None: not known, a state graph job)."""
    if job_id is not None:
        job = service.get(job_id)
        return job_nodes(job.kind, job.workflow)
    from midrun.jobs.workflows import get_workflow

    return set(get_workflow(service, str(workflow_id))["workflow"])


def _row(conn: Connection, bp_id: str) -> Any:
    row = conn.execute(select(breakpoints).where(breakpoints.c.id == bp_id)).first()
    if row is None:
        raise BreakpointNotFound(f"No breakpoint {bp_id!r}", breakpoint_id=bp_id)
    return row


def get(service: Jobs, bp_id: str) -> dict[str, Any]:
    with service.db.read() as conn:
        return public(_row(conn, bp_id))


def list_breakpoints(
    service: Jobs, *, job_id: str | None = None, workflow_id: str | None = None
) -> list[dict[str, Any]]:
    """A job's own breakpoints, or a workflow's."""
    query = select(breakpoints).order_by(breakpoints.c.created_at, breakpoints.c.id)
    if job_id is not None:
        query = query.where(breakpoints.c.job_id == job_id)
    if workflow_id is not None:
        query = query.where(breakpoints.c.workflow_id == workflow_id)
    with service.db.read() as conn:
        return [public(r) for r in conn.execute(query)]


def set_enabled(
    service: Jobs, bp_id: str, enabled: bool, *, actor: str | None = None
) -> dict[str, Any]:
    with service.db.begin() as conn:
        row = _row(conn, bp_id)
        spec = _write_enabled(conn, row, enabled)
        service.store.record(conn, row.job_id, EventKind.BREAKPOINT_ENABLED if enabled
                             else EventKind.BREAKPOINT_DISABLED, actor=actor, breakpoint_id=bp_id,
                            node_id=spec.get("node_id"))  # fmt: skip
        row = _row(conn, bp_id)
    _poke(service, row.job_id)
    return public(row)


def _write_enabled(conn: Connection, row: Any, enabled: bool) -> dict[str, Any]:
    """The one write of a breakpoint's ``enabled``: its column and its spec; the spec."""
    spec = {**row.spec, "enabled": enabled}
    conn.execute(update(breakpoints).where(breakpoints.c.id == row.id)
                 .values(enabled=enabled, spec=spec))  # fmt: skip
    return spec


def disable_failed(service: Jobs, job_id: str, bp: Breakpoint, step: int | None) -> None:
    """Turn off a breakpoint whose condition or log message passed a limit of the
    evaluator at a point of ``job_id`` (``bp.failure`` says which), and say so on the
    job's log: ``breakpoint_disabled`` with ``error``. The job goes on."""
    with service.db.begin() as conn:
        row = conn.execute(select(breakpoints).where(breakpoints.c.id == bp.id)).first()
        if row is not None:  # (removed meanwhile: only the log says it)
            _write_enabled(conn, row, False)
        service.store.record(conn, job_id, EventKind.BREAKPOINT_DISABLED, actor="midrun",
                             step=step, node_id=bp.node_id, breakpoint_id=bp.id,
                             error=bp.failure)  # fmt: skip


def remove(service: Jobs, bp_id: str, *, actor: str | None = None) -> dict[str, Any]:
    with service.db.begin() as conn:
        row = _row(conn, bp_id)
        conn.execute(delete(breakpoints).where(breakpoints.c.id == bp_id))
        service.store.record(conn, row.job_id, EventKind.BREAKPOINT_REMOVED, actor=actor,
                            breakpoint_id=bp_id, node_id=row.spec.get("node_id"))  # fmt: skip
    _poke(service, row.job_id)
    return public(row)


def _poke(service: Jobs, job_id: str | None) -> None:
    """Running jobs of this process reload their breakpoints at their next point."""
    if job_id is None:
        service.signals.poke_all()
    else:
        service.signals.poke(job_id)


def active(conn: Connection, job_id: str, workflow_id: str | None) -> list[Breakpoint]:
    """The enabled breakpoints that apply to a job: its own and its workflow's."""
    scope = breakpoints.c.job_id == job_id
    if workflow_id is not None:
        scope = or_(scope, breakpoints.c.workflow_id == workflow_id)
    query = select(breakpoints).where(scope, breakpoints.c.enabled.is_(True))
    return [_stored(r) for r in conn.execute(query.order_by(breakpoints.c.created_at))]


# -- stepping ----------------------------------------------------------------------------

JOB_STEP_MODES = (StepMode.OVER, StepMode.INTO, StepMode.OUT)
STEP_MODES = tuple(m.value for m in JOB_STEP_MODES)


def check_mode(mode: Any) -> StepMode:
    """The step mode a job may be stepped with (``over``, ``into``, ``out``)."""
    if mode not in STEP_MODES:
        raise BreakpointError(f"Step mode {mode!r} is not one of {', '.join(STEP_MODES)}",
                              field="mode")  # fmt: skip
    return StepMode(mode)


def request_step(
    service: Jobs, job_id: str, mode: str, *, actor: str | None = None,
    front: bool | None = None,
) -> Job:  # fmt: skip
    """Resume a paused job so that it stops again at the next point ``mode`` names: a
    resume (through the job state table) carrying a one-shot step request."""
    return service.resume(job_id, actor=actor, front=front, step=check_mode(mode))


def step_mode_of(request: str | None) -> StepMode | None:
    """The step mode a job row's ``request`` carries, if any."""
    mode = StepMode.of_command(request)
    return mode if mode in JOB_STEP_MODES else None
