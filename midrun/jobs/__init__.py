"""Jobs: the job state machine, the persistent queue, device workers and mid-run control
(pause, resume, edit, undo, abort, the global pipeline pause, batches, crash recovery)."""
