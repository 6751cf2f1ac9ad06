"""Where translate and eval run: ``--nproc N`` (the same command again in N processes under
torchrun) or ``--engine ray``; the options they share."""

from enum import Enum
from typing import Annotated

import typer

from p2p.errors import P2PError, install_extra
from p2p.limits import MAX_WORKERS


class Engine(str, Enum):
    torch = "torch"  # this process, or --nproc / torchrun processes
    ray = "ray"  # a Ray Data pipeline (the ray extra)


EngineOption = Annotated[Engine, typer.Option(
    "--engine", help="torch: this process (or --nproc); ray: a Ray Data pipeline on the "
    f"cluster at --ray-address or RAY_ADDRESS, else an embedded one ({install_extra('ray')}).")]
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="The Ray cluster to join (HOST:PORT, ray://HOST:PORT); default "
    "$RAY_ADDRESS, else an embedded Ray on this machine.")]
GpusPerWorkerOption = Annotated[float, typer.Option(
    "--gpus-per-worker", min=0, max=MAX_WORKERS, help="--engine ray: GPUs each worker "
    "holds; 0 runs on CPUs.")]

# The exit codes of a finished command that are an outcome, not a failure: skipped items (1)
# and a stop by a signal (130).
OUTCOMES = (1, 130)


def refuse_nested(nproc: int) -> None:
    """``--nproc`` starts torchrun: refused inside a process it started."""
    from p2p.distributed import world_from_env

    if nproc > 1 and world_from_env().size > 1:
        raise P2PError("--nproc starts torchrun, but this process already runs under it",
                       "leave out --nproc under torchrun")


def relaunch(ctx: typer.Context, nproc: int, job: str) -> int:
    """Run this command, as parsed, in ``nproc`` processes (without ``--nproc``) under torchrun;
    returns the exit code (see ``p2p.distributed.launch``)."""
    from p2p.distributed import launch

    return launch(nproc, [*ctx.command_path.split()[1:], *worker_args(ctx)], job, OUTCOMES)


def worker_args(ctx: typer.Context) -> list[str]:
    """The command line of ``ctx``'s command as parsed, less ``--nproc``: options that differ
    from their default, then the arguments after ``--``."""
    options, arguments = [], []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "nproc" or value is None:
            continue
        value = value.value if isinstance(value, Enum) else value
        if param.param_type_name == "argument":
            arguments.append(str(value))
        elif getattr(param, "is_flag", False):
            options += [param.opts[0]] if value else []
        elif value != param.default:
            options += [param.opts[0], str(value)]
    return [*options, "--", *arguments]
