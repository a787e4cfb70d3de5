"""A failing rule's traceback, warnings and library output reach its log file."""

import subprocess
import sys
import textwrap
from pathlib import Path

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def test_a_crashing_script_leaves_its_traceback_in_the_rule_log(tmp_path):
    (tmp_path / "crash.py").write_text(
        textwrap.dedent(
            """
            import logging, os, warnings
            from ftlab.runlog import setup_logging

            setup_logging(snakemake.log[0])
            logging.getLogger("ftlab").info("started %s", snakemake.rule)
            print("library output on stdout")
            os.write(2, b"raw bytes on fd 2\\n")
            warnings.warn("a warning")
            raise RuntimeError("boom: bad value in config key 'x'")
            """
        )
    )
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """
            rule crash:
                output: "out.txt"
                log: "logs/crash.log"
                script: "crash.py"
            """
        )
    )
    run = subprocess.run(
        [str(SNAKEMAKE), "--cores", "1", "-q"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode != 0
    log = (tmp_path / "logs/crash.log").read_text()
    for needle in (
        "started crash",
        "library output on stdout",
        "raw bytes on fd 2",
        "a warning",
        "Traceback",
        "RuntimeError: boom: bad value in config key 'x'",
    ):
        assert needle in log, (needle, log)
