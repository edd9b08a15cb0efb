"""W&B mode for sweeps (issue 14, item 13): an existing `wandb login` (~/.netrc) is respected; offline
only when no key is configured at all. Run in a fresh process with its own HOME (wandb keeps global state),
its own working directory and temporary folder, and an environment built from nothing: what the test
sees must not depend on which tests ran before it in the same pytest process (the variables they or Ray
left in os.environ, a ./wandb folder in the directory pytest runs in) nor on the user running it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, os
from tkre.sweep.run import _wandb_callbacks
from tkre.sweep.config import SweepConfig
[cb] = _wandb_callbacks(SweepConfig(name="t"), os.environ["HOME"])
print("RESULT " + json.dumps({"mode": cb.mode, "env": os.environ.get("WANDB_MODE")}))
"""


#: all the child process takes from this one (PYTHONPATH: a checkout imported without installing it)
INHERITED = ("PATH", "PYTHONPATH", "LANG", "LC_ALL")


def _mode(home) -> dict:
    tmp = home / "tmp"
    tmp.mkdir()
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(HOME=str(home), TMPDIR=str(tmp), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=home, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def test_existing_wandb_login_is_respected_offline_only_without_a_key(tmp_path):
    plain, logged_in = tmp_path / "plain", tmp_path / "logged_in"
    plain.mkdir()
    logged_in.mkdir()
    netrc = logged_in / ".netrc"  # what `wandb login` writes
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "0123456789abcdef" * 2 + "01234567\n")
    netrc.chmod(0o600)
    assert _mode(plain) == {"mode": "offline", "env": "offline"}  # no key anywhere: runs stay on disk
    assert _mode(logged_in) == {"mode": None, "env": None}  # logged in: online, as wandb itself would
