"""``talk3d fit --nproc N``: start the same fit as N data-parallel ranks with torchrun.

This is only a convenience for one machine, the same as
``torchrun --standalone --nproc-per-node N -m talk3d_cli.main fit ARGS``. For several machines, call
torchrun yourself with its rendezvous flags (see docs/fit.md, "Several processes, GPUs or
machines").
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Sequence

from talk3d.console import terminal_stderr
from talk3d.errors import UserError


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def launch_fit(nproc: int, argv: Sequence[str], run_dir: str) -> None:
    """Run ``talk3d fit`` (its arguments ``argv``, ``--nproc`` removed) as ``nproc`` ranks.

    Uses torchrun's own engine (``torch.distributed.launcher.elastic_launch``, a standalone
    rendezvous on this machine); a failing rank stops the others, and the failure is reported
    here in one line instead of torchrun's report.

    Raises:
        UserError: a rank failed (rank 0 printed its error line above).
    """
    if "WORLD_SIZE" in os.environ:
        raise UserError("--nproc cannot be used inside torchrun: torchrun already starts the ranks")
    if not 1 < nproc <= 1024:
        raise UserError(f"--nproc must be between 2 and 1024, got {nproc}")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):  # torchrun's agent logs every signal it sends
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    args = ["-m", "talk3d_cli.main", "fit", *without_option(argv, "--nproc")]
    try:
        with terminal_stderr():  # the ranks print to the terminal themselves
            elastic_launch(config, sys.executable)(*args)
    except SignalException:  # Ctrl-C (or a kill) reached torchrun's agent; rank 0 said what it kept
        raise SystemExit(130) from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == 130:  # the ranks were interrupted; rank 0 said what it kept
            raise SystemExit(130) from None
        raise UserError(f"the {nproc}-process fit stopped: rank {rank} exited with code {failure.exitcode}; "
                        f"'{run_dir}' keeps its last good checkpoint, if any: fix what is reported above and run the "
                        f"same command again") from None
