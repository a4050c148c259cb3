"""``python -m evo_snn.export``: export one member of a finished (or running) search's front.

``build_parser`` (the flags), ``export_run`` (the Python API: check the arguments, read
the run, take its lock unless ``--out``), ``_export_locked`` (reload the run's fitness
as the baselines do, choose the member, retrain it if asked, export it) and ``main``
(exit codes: 0 done, 2 a usage or run error, 1 a full disk, 130 interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from evo_snn.atomic import DISK_ERRNOS
from evo_snn.cli import show_progress
from evo_snn.deploy.picks import ExportError, parse_pick, pick_member
from evo_snn.deploy.writer import export_member, nir_writer, retrained_metrics, run_context
from evo_snn.state.rundir import RunDir

EXIT_USAGE = 2

CLI_DESCRIPTION = """\
Export one member of a search's Pareto front: choose it on validation metrics, retrain it
if asked, measure it once on the test split and write RUN_DIR/exported/<uid>/ (or
DIR/<uid>/ with --out). The folder is written under a temporary name and renamed into
place, so a failure leaves no half-written export. It holds:

  teacher.pt, student.pt     the sparse teacher and the student (plain state_dicts)
  *.sparse.npz               the same weights as packed masks + kept values
  genome.json, masks.npz     the genome (per-layer prune ratios and masks)
  metrics.json               validation and test metrics, model arguments, provenance
  MODEL_CARD.md              the same for people
  student.nir                with --nir: the student as a NIR graph

Quote the --pick expression, or the shell reads '>=' as a redirection:

  python -m evo_snn.export RUN_DIR --pick 'sparsity>=0.8' --retrain-epochs 5
  python -m evo_snn.export RUN_DIR --pick knee

Reload an export in Python with evo_snn.load_exported("RUN_DIR/exported/<uid>").
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evo_snn.export", description=CLI_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of evo_snn.search.run (with checkpoints/)")
    p.add_argument("--pick", required=True, metavar="PICK",
                   help="which front member, chosen on validation metrics: knee | max-accuracy | min-energy | "
                   "'sparsity>=X' (the most accurate member at least X sparse; when none is, the sparsest, with a "
                   "note) | uid=UID")
    p.add_argument("--retrain-epochs", type=float, default=0.0, metavar="N",
                   help="retrain the chosen genome N KD epochs (masks kept, its own seed) before the single test "
                   "measurement, as search.final_epochs does (default 0: export the student trained in the search)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/<uid>/ instead of RUN_DIR/exported/<uid>/ (needed while the search is still running)")
    p.add_argument("--nir", action="store_true", help="also write the student as a NIR graph, student.nir")
    p.add_argument("--data-root", default=None, metavar="PATH", help="data root (default: the one recorded in manifest.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def export_run(run_dir: str | Path, pick: str, retrain_epochs: float = 0.0, out: str | Path | None = None,
               nir: bool = False, data_root: str | None = None, progress: bool = True,
               argv: list[str] | None = None) -> dict:
    """Choose a member of a run's front by ``pick`` (``choose_member``; validation metrics
    of the last checkpoint's archive), retrain it for ``retrain_epochs`` KD epochs when >
    0 (``baselines.Comparison.evaluate``: the final-retraining code path), export it with
    its single test measurement (``export_member``) and return the record.

    Without ``out`` the export goes into ``run_dir/exported/`` under the run's lock
    (``RunDir.lock``, held for the export); with ``out`` the run is only read.

    raises ExportError (bad pick, no energy metric, NIR unavailable, a running search
    without ``out``, retraining failed), and ConfigError, DatasetFormatError,
    RunDirError, CheckpointError, TeacherLoadError from loading the run.
    """
    from evo_snn.state.rundir import RunDirError

    parse_pick(pick)
    if retrain_epochs < 0:
        raise ExportError(f"--retrain-epochs {retrain_epochs:g}: must be >= 0")
    if nir:
        nir_writer()  # fail before any work
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise RunDirError(f"{path / 'config.json'} not found; RUN_DIR must be a run directory of evo_snn.search.run")
    run = RunDir(path)  # not RunDir.open: no folder is made in the run
    try:
        run.manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}
    except ValueError as e:
        raise RunDirError(f"{path / 'manifest.json'}: not readable JSON ({e})") from e
    if out is None:  # writing into the run: be its one writer (a running search or --resume holds run.lock)
        try:
            run.lock()
        except RunDirError as e:
            raise ExportError(f"{path} is still being searched ({e}); pass --out DIR to export from its last "
                              "checkpoint without writing into the run") from e
    try:
        return _export_locked(run, pick, retrain_epochs, out, nir, data_root, progress, argv)
    finally:
        run.unlock()


def _export_locked(run: RunDir, pick: str, retrain_epochs: float, out, nir: bool, data_root, progress: bool, argv) -> dict:
    # the run's fitness, reloaded as the baselines do (data, teacher, checkpoint)
    from evo_snn.analysis.baselines import Comparison
    from evo_snn.state.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run.checkpoints, verify_students=False)  # only the exported member's student is read
    records = [r for r in ckpt.state["archive"] if r.get("status") != "failed"]
    chosen, note = pick_member(records, pick)
    if note:
        print(f"note: {note}", file=sys.stderr)
    uid = chosen["uid"]
    tqdm.write(f"picked {uid} ({pick}): validation accuracy {chosen['metrics']['accuracy']:.4f}, "
               f"sparsity {chosen['metrics']['sparsity']:.4f} (generation {ckpt.gen} archive of {len(records)})")
    cmp = Comparison(run, data_root=data_root, workers=1, progress=progress, verify_students=False)
    try:
        try:
            member = next((m for m in cmp.search_members(uids={uid}) if m.uid == uid), None)
        except KeyError:
            member = None
        if member is None:  # a running search wrote a newer checkpoint in between
            raise ExportError(f"{uid} left the archive in {run.checkpoints} (the running search moved on); try again")
        metrics, state = dict(member.metrics), member.student_state
        if retrain_epochs > 0:  # select on validation, retrain, test once
            res = cmp.evaluate([(member.genome, member.seed)], epochs=retrain_epochs, desc="retraining")[0]
            if isinstance(res, Exception):
                raise ExportError(f"retraining {uid} failed: {type(res).__name__}: {res}") from res
            state = res.student_state
            metrics = retrained_metrics(metrics, res.metrics, retrain_epochs)
        teacher_metrics = json.loads((run.teacher / "metrics.json").read_text()) if (run.teacher / "metrics.json").is_file() else {}
        context = run_context(run, cmp.cfg, cmp.splits, teacher_metrics, argv)
        model_args = (cmp.cfg.model, cmp.splits.frame_shape, cmp.splits.num_classes)
        roles = [pick if not note else f"{pick} (nearest)"]
        previous = (Path(out) if out is not None else run.exported) / uid / "metrics.json"
        if previous.is_file():  # exported before (e.g. as the run's knee): keep its roles
            try:
                roles = list(dict.fromkeys([*(json.loads(previous.read_text()).get("roles") or []), *roles]))
            except ValueError:
                pass
        rec = export_member(run, uid, roles, member.genome, metrics, state, cmp.teacher, model_args, cmp.splits.test,
                            cmp.layers, out_root=None if out is None else Path(out), context=context, nir=nir,
                            val=cmp.splits.val)
    finally:
        cmp.close()
    rec["export_dir"] = str((Path(out) if out is not None else run.exported) / uid)
    return rec


def main(argv: list[str] | None = None) -> int:
    from evo_snn.state.checkpoint import CheckpointError
    from evo_snn.config import ConfigError
    from evo_snn.data import DatasetFormatError
    from evo_snn.state.rundir import RunDirError, sigterm_as_interrupt
    from evo_snn.training.teacher import TeacherLoadError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():
            rec = export_run(args.run_dir, args.pick, args.retrain_epochs, args.out, args.nir, args.data_root,
                             progress=show_progress(args), argv=["python", "-m", "evo_snn.export", *argv])
    except (ExportError, ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        print(f"error: {e.strerror or e} while exporting{f' {e.filename}' if e.filename else ''}; nothing was "
              "exported (free some space and run the same command again)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (nothing exported)", file=sys.stderr)
        return 130
    val = rec["student_val_accuracy"]
    print(f"exported {rec['uid']} -> {rec['export_dir']}: validation accuracy {val:.4f}"
          + (f" (after {rec['final_epochs']:g} retraining epochs; {rec['accuracy']:.4f} at selection)" if rec.get("final_epochs") else "")
          + f", test accuracy {rec['test_accuracy']:.4f}, sparsity {rec['test_sparsity']:.4f}")
    return 0
