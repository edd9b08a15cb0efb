"""W&B mode for sweeps (issue 14, item 13): an existing `wandb login` (the netrc entry for the W&B host) is
respected; offline only when no key is configured at all. Run in a fresh process with its own HOME (wandb
keeps global state), its own working directory and temporary folder, and an environment built from nothing:
what the test sees must not depend on which tests ran before it in the same pytest process (the variables they
or Ray left in os.environ, a ./wandb folder in the directory pytest runs in) nor on the user running it."""

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


def _mode(home, **extra_env) -> dict:
    tmp = home / "tmp"
    tmp.mkdir()
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(HOME=str(home), TMPDIR=str(tmp), HF_HUB_OFFLINE="1", **extra_env)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=home, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def _netrc(path, host: str = "api.wandb.ai"):  # what `wandb login` writes
    path.write_text(f"machine {host}\n  login user\n  password " + "0123456789abcdef" * 2 + "01234567\n")
    path.chmod(0o600)


def test_existing_wandb_login_is_respected_offline_only_without_a_key(tmp_path):
    homes = {name: tmp_path / name for name in ("plain", "logged_in", "other_host", "netrc_var")}
    for home in homes.values():
        home.mkdir()
    _netrc(homes["logged_in"] / ".netrc")
    _netrc(homes["other_host"] / ".netrc", "wandb.example.org")  # a key for a server this sweep does not use
    _netrc(tmp_path / "elsewhere.netrc", "wandb.example.org")
    online, offline = {"mode": None, "env": None}, {"mode": "offline", "env": "offline"}
    assert _mode(homes["plain"]) == offline  # no key anywhere: runs stay on disk
    # logged in: online, as wandb itself would -- and found without wandb's service process or the
    # network (wandb.login(verify=False) asked the server for the user's name: CI waited 300 s for it)
    assert _mode(homes["logged_in"]) == online
    assert _mode(homes["other_host"]) == offline
    assert _mode(homes["netrc_var"], NETRC=str(tmp_path / "elsewhere.netrc"),
                 WANDB_BASE_URL="https://wandb.example.org") == online
