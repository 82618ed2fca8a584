"""`noex-lab top` with no SEED_ID attaches to the node a notebook started with the per-user secret;
with another secret, `%noex start` prints the exact command that attaches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.processes import repo_env
from tests.lab.conftest import shutdown_and_reap
from tests.lab.kernel_harness import REPO, Kernel


def _top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noex_lab.cli", "top", *args], capture_output=True, text=True,
                          timeout=30, env=repo_env(), cwd=str(REPO))


@pytest.mark.timeout(90)
def test_top_finds_the_notebook_and_says_how_to_attach_otherwise() -> None:
    kernel = Kernel()
    try:
        kernel.ok("%load_ext noex_lab")
        started = kernel.ok("%noex start nbtop").text
        assert "attach from a terminal: noex-lab top (it finds this node" in started, started
        result = _top("--json", "--connect-timeout", "10")
        assert result.returncode == 0, result.stderr
        assert "nbtop" in {member["name"] for member in json.loads(result.stdout)["members"]}

        kernel.ok("%noex stop")
        gone = _top("--json", "--connect-timeout", "2")
        assert gone.returncode != 0 and "no notebook cluster found" in gone.stderr, gone.stderr
        assert "%noex start NAME" in gone.stderr

        kernel.ok("import os; os.environ['NB_TOP_SECRET'] = 'nb-top-secret-0123456789'")
        text = kernel.ok("%noex start nbenv --secret-env NB_TOP_SECRET").text
        assert "attach from a terminal: noex-lab top nbenv@127.0.0.1:" in text and "--secret-env NB_TOP_SECRET" in text
        assert "no notebook cluster found" in _top("--json", "--connect-timeout", "2").stderr  # not advertised
    finally:
        shutdown_and_reap(kernel)
