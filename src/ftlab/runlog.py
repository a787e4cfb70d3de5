"""Logging of one workflow job (a rule's script).

Everything the job writes — ftlab's log records, warnings, library output on stdout/stderr
and the traceback of an uncaught exception — goes to the rule's `log:` file, so
`logs/<rule>/<...>.log` explains a failure; Snakemake's own message names that file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup_logging(log_path: str | None) -> None:
    """Point this process's stdout and stderr (file descriptors 1 and 2, so C libraries and
    child processes are captured too) at `log_path`, and log ftlab's records there."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr)],
        force=True,
    )
    logging.captureWarnings(True)
