"""How a search run ends: for each ending, the status recorded in manifest.json
(``RunDir.finish``), the lines printed and the exit code that ``python -m evo_snn.search``
returns:

- ``completed``: exported and plotted; 'completed', the next steps printed; exit 0;
- ``no_front``: every evaluation failed; 'failed'; exit 1;
- ``failed``: ``search.max_failed_generations`` generations without a success; 'failed'; exit 1;
- ``disk_full``: a full disk or quota; 'failed', the ``--resume`` command printed; exit 1;
- ``not_loaded``: a teacher or checkpoint that does not load or fit; 'failed' (a resumed
  completed run stays 'completed'); exit 2 (``EXIT_USAGE``);
- ``interrupted``: Ctrl-C or SIGTERM; 'interrupted', where the run stands and the
  ``--resume`` command printed; exit 130;
- ``crashed``: any other exception; 'failed' with its traceback; the exception is raised on.

Errors are one line on stderr (``error: ...``).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from tqdm.auto import tqdm

from evo_snn.config import Config
from evo_snn.search.nsga import StructureSearch
from evo_snn.search.options import EXIT_USAGE
from evo_snn.search.stages import teacher_files
from evo_snn.state.rundir import RunDir
from evo_snn.state.runlog import RunLogger, failure_summary
from evo_snn.training.teacher import PARTIAL_FILE


def next_steps(run_path: Path, uid: str | None = None) -> str:
    """The lines printed at the end of a run (and by ``--resume`` of a complete run): where
    the front and its plot are, and the commands that come next (``uid``: an exported member)."""
    r = str(run_path)
    cmds = [("front table", f"python -m evo_snn.pareto {r}"),
            ("vs pruning", f"python -m evo_snn.baselines {r}"),
            ("export", f"python -m evo_snn.export {r} --pick knee    (or --pick 'sparsity>=0.7')"),
            ("reload", f"python -c \"import evo_snn; s, t, info = evo_snn.load_exported('{r}/exported/{uid or '<uid>'}')\""
                       "    (reset_net between batches)")]
    return "\n".join([f"  front:       {run_path / 'pareto.csv'}", f"  plot:        {run_path / 'plots' / 'pareto.png'}",
                      "next:"] + [f"  {label + ':':<12} {c}" for label, c in cmds])


def completed(run: RunDir, logger: RunLogger, exported: list[dict], t0: float) -> int:
    """Status 'completed' with the evaluation count, the exported uids and the wall time
    since ``t0`` (``time.perf_counter``); prints ``next_steps``; returns 0."""
    run.finish("completed", n_evaluations=len(logger.rows), exported=sorted(r["uid"] for r in exported),
               wall_s=time.perf_counter() - t0)
    tqdm.write(f"done: {run.path}\n{next_steps(run.path, min((r['uid'] for r in exported), default=None))}")
    return 0


def no_front(run: RunDir, logger: RunLogger) -> int:
    """Every evaluation failed, so there is nothing to export, plot or test: status 'failed'
    with their distinct errors; returns 1."""
    msg = (f"every one of the {len(logger.rows)} evaluations failed, so there is no front to export "
           f"(errors: {failure_summary(logger.rows)}); see {run.path / 'evaluations.jsonl'}")
    run.finish("failed", error=msg, n_evaluations=len(logger.rows))
    print(f"error: {msg}", file=sys.stderr)
    return 1


def failed(run: RunDir, e: Exception) -> int:
    """``SearchFailedError`` (search.max_failed_generations generations without a successful
    evaluation): status 'failed' with its message; returns 1."""
    run.finish("failed", error=str(e))
    print(f"error: {e}", file=sys.stderr)
    return 1


def not_loaded(run: RunDir, e: Exception, resumed: bool) -> int:
    """A teacher or checkpoint that does not load or fit (``TeacherLoadError``,
    ``CheckpointError``): status 'failed', except that a failed resume (``resumed``) of a
    completed run keeps it 'completed' with its end time, the error in its resume entry
    (D9 of issue 27); returns 2."""
    previous = (run.manifest.get("resumes") or [{}])[-1].get("previous_status") if resumed else None
    if previous == "completed":  # a failed resume never rewrites a completed run's status (D9 of issue 27)
        entry = run.manifest["resumes"][-1]
        entry["error"] = f"{type(e).__name__}: {e}"
        run.manifest.update(status="completed", end=entry.get("previous_end"))
        run.write_json("manifest.json", run.manifest)
    else:
        run.finish("failed", error=f"{type(e).__name__}: {e}")
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE


def interrupted(run: RunDir, cfg: Config, search: StructureSearch | None) -> int:
    """Ctrl-C or SIGTERM: status 'interrupted', ``interrupted_message`` printed; returns 130."""
    run.finish("interrupted")
    print(interrupted_message(run, cfg, search), file=sys.stderr)
    return 130


def interrupted_message(run: RunDir, cfg: Config, search: StructureSearch | None) -> str:
    """What Ctrl-C / SIGTERM prints: where the run stands and the command that continues it."""
    resume = f"python -m evo_snn.search --resume {run.path}"
    G = cfg.search.generations
    if search is None or search.gen < 0:
        teacher = all((run.teacher / name).is_file() for name in teacher_files(cfg))
        partial = run.teacher / PARTIAL_FILE
        if teacher:
            where = "before generation 0 finished; the teacher is saved, so --resume starts generation 0 with it"
        elif partial.is_file():
            where = "while training the teacher; --resume continues its training from the last finished epoch"
        else:
            where = "while preparing the teacher, before its first epoch ended; --resume trains it again"
    elif search.gen >= G:
        where = f"after the last generation ({G}/{G}) was checkpointed, during the export; --resume exports again"
    else:
        where = (f"during generation {search.gen + 1}/{G}; generations 0-{search.gen} are checkpointed in "
                 f"{run.checkpoints}, and finished evaluations of generation {search.gen + 1} are reused")
    return f"interrupted {where}.\ncontinue with:\n  {resume}"


def disk_full(run: RunDir, e: OSError) -> int:
    """An OSError of a full disk or quota (``atomic.DISK_ERRNOS``): status 'failed' (when the
    manifest can still be written) with the ``--resume`` command; returns 1."""
    msg = f"{e.strerror or e} while writing {e.filename or run.path}: free some space, then continue with: " \
          f"python -m evo_snn.search --resume {run.path}"
    try:
        run.finish("failed", error=msg)
    except OSError:  # the manifest cannot be written either: it still says 'running'
        pass
    print(f"error: {msg}", file=sys.stderr)
    return 1


def crashed(run: RunDir, e: BaseException) -> None:
    """Any other exception (called while it is handled, before it is raised on): status
    'failed' with its type, message and traceback."""
    run.finish("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
