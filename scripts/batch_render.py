"""Renders the test circle and meshes of many runs and writes one report over them.

  python scripts/batch_render.py RUN_DIR_OR_GLOB [...] [--out DIR] [--force]

Each argument is a run directory or a glob of them (quote it, e.g. 'outputs/*'); only directories
holding a config.py count as runs. A run is finished when test/interaction.mp4, mesh/scene.glb and
metrics.json exist; unfinished runs (all runs with --force) are rendered with
interfusion_jax.train.test_run and then export_run. A run that fails is reported on stderr in one
line, `<run_dir>: <message>`, and the others go on; the report then shows its failure and whatever
outputs it has.

The report (interfusion_jax.report) goes to --out, by default `report/` in the deepest folder that
holds all the runs' parent folders: 'outputs/*' -> outputs/report/ (no config.py there, so a later
'outputs/*' does not take it for a run).

Exit status: 0 when every run rendered (or was finished), 1 when any failed, 2 on a usage error
(such as no run matching).
"""
import argparse
import glob
import importlib
import os
import sys

from tqdm import tqdm

from ifcommon import UserError, command_line
from ifcommon.errors import USER_ERRORS
from interfusion_jax.report import write_report

FINISHED = (os.path.join("test", "interaction.mp4"), os.path.join("mesh", "scene.glb"),
            "metrics.json")


def expand_runs(patterns):
    """Run directories (holding config.py) matched by paths/globs, in argument order, each once
    -> (runs, patterns that matched no run)."""
    runs, seen, unmatched = [], set(), []
    for pattern in patterns:
        matched = [d for d in sorted(glob.glob(os.path.expanduser(pattern)))
                   if os.path.isfile(os.path.join(d, "config.py"))]
        if not matched:
            unmatched.append(pattern)
        for d in matched:
            if os.path.realpath(d) not in seen:
                seen.add(os.path.realpath(d))
                runs.append(os.path.normpath(d))
    return runs, unmatched


def is_finished(run_dir):
    return all(os.path.isfile(os.path.join(run_dir, f)) for f in FINISHED)


def default_out(runs):
    """report/ in the common folder of the runs' parents."""
    return os.path.join(os.path.commonpath([os.path.dirname(os.path.abspath(r)) for r in runs]),
                        "report")


def render_run(run_dir):
    """Test-circle videos, then meshes and metrics, of one run."""
    # Imported here, so that --help and usage errors answer without loading JAX.
    train = importlib.import_module("interfusion_jax.train")
    train.test_run(run_dir)
    train.export_run(run_dir)


def failure_line(error):
    """One line for a failed run: a user error's message as is (it names the file at fault), else
    the exception's type and first line."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {first}"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="batch_render.py", description=__doc__.split("\n\n")[0],
        epilog="Default --out: report/ beside the runs ('outputs/*' -> outputs/report).")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_GLOB",
                        help="a run directory (with config.py) or a quoted glob of them")
    parser.add_argument("--out", help="report folder (default: report/ beside the runs)")
    parser.add_argument("--force", action="store_true", help="render finished runs again too")
    return parser.parse_args(argv)


@command_line
def main(argv):
    """Command-line arguments -> exit status: 0 all fine, 1 a run failed (2 on a usage error)."""
    args = parse_args(argv)
    runs, unmatched = expand_runs(args.runs)
    if not runs:
        raise UserError(f"no run directory (a folder with config.py) matches {' '.join(args.runs)}")
    for pattern in unmatched:
        print(f"batch_render.py: {pattern}: matches no run directory", file=sys.stderr)
    errors = {}
    for run in tqdm(runs, desc="runs", unit="run"):
        if is_finished(run) and not args.force:
            continue
        try:
            render_run(run)
        except Exception as e:  # noqa: BLE001 - one broken run must not stop the others
            errors[run] = failure_line(e)
            tqdm.write(f"{run}: {errors[run]}", file=sys.stderr)
    index, sheet = write_report(runs, args.out or default_out(runs), errors)
    print(f"report: {index}\ncontact sheet: {sheet}")
    return 1 if errors else 0


if __name__ == "__main__":
    main()
