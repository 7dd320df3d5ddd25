"""`hfexport matrix`: every model x target x recipe combination built, on Ray when it is installed."""

from __future__ import annotations

import click

from hfexport._cli_errors import handle_errors


@click.command()
@click.option("--model", "-m", "models", multiple=True, help="Hub id or local folder (repeat) [default: the default model].")
@click.option("--target", "-t", "targets", multiple=True, help="Target name or YAML (repeat) [default: cpu].")
@click.option("--recipe", "-r", "recipes", multiple=True, help="Recipe name or YAML (repeat) [default: the target's].")
@click.option("--output", "-o", default="hfexport-matrix", show_default=True,
              help="Folder for one bundle per passing combination and matrix.{md,json,html}.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Ray cluster to run on ('local' starts one here) [default: a local cluster when Ray is "
                   "installed, else one build at a time in this process].")
@click.option("--sequential", is_flag=True, help="One build at a time in this process, even when Ray is installed.")
@click.option("--cpus-per-build", type=float, default=1, show_default=True, help="Ray CPUs each build asks for.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True,
              help="Ray: retries of a build whose worker died.")
@click.option("--validation", type=click.Choice(["quick", "full"]), default=None,
              help="Validation of every build [default: full].")
@click.option("--no-cache", is_flag=True, help="Rerun every pass of every build.")
@click.option("--quiet", "-q", is_flag=True)
@handle_errors
def matrix(models, targets, recipes, output, ray_address, sequential, cpus_per_build, retries, validation, no_cache,
           quiet) -> None:
    """Build every combination of models, targets and recipes; compare them in one report."""
    from hfexport.matrix import plan_matrix, run_matrix, write_matrix_report
    from hfexport.progress import Progress

    if sequential and ray_address:
        raise click.UsageError("--sequential and --ray: choose one")
    progress = Progress("quiet" if quiet else "text")
    combos = plan_matrix(list(models) or [None], list(targets) or ["cpu"], list(recipes) or [None])
    use_ray = False if sequential else (True if ray_address else None)
    options = {"cache": not no_cache, **({"validation": validation} if validation else {})}
    run = run_matrix(combos, output, ray=use_ray, address=ray_address, cpus_per_build=cpus_per_build,
                          retries=retries, options=options, progress=progress)
    paths = write_matrix_report(run, output)
    passed = sum(o.status == "passed" for o in run.outcomes)
    click.echo(f"{passed} of {len(run.outcomes)} combinations passed; report: {paths['html']} (table: {paths['md']})")
    if passed < len(run.outcomes):
        raise SystemExit(1)
