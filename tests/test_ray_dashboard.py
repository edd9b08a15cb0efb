"""Ray's dashboard for local sweeps (tkre.cluster.runtime): on when its dependencies (`ray[default]`)
are installed, its address logged; off without them (a minimal Ray cannot serve it) and never
requested when joining a cluster (the cluster decides). ray.init is replaced by a recorder: the
test checks what tkre asks of Ray, not Ray's start-up."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

from tkre.cluster import runtime


@pytest.fixture
def fake_ray(monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        url = "127.0.0.1:8265" if kwargs.get("include_dashboard") else ""
        return SimpleNamespace(dashboard_url=url, address_info={"session_dir": "/tmp/ray/session_x"})

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def _deps(monkeypatch, installed: bool):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (real("json") if installed else None)
                        if name in runtime.DASHBOARD_MODULES else real(name, *a))


def test_local_sweep_gets_the_dashboard_when_installed_and_its_address_is_logged(fake_ray, monkeypatch, caplog):
    _deps(monkeypatch, installed=True)
    with caplog.at_level(logging.INFO, logger="tkre.cluster.runtime"):
        runtime.init_ray(dashboard=True)
    assert fake_ray[-1]["include_dashboard"] is True
    assert "Ray dashboard: http://127.0.0.1:8265" in caplog.text


def test_no_dashboard_without_its_dependencies_and_the_log_says_how_to_get_it(fake_ray, monkeypatch, caplog):
    _deps(monkeypatch, installed=False)
    with caplog.at_level(logging.INFO, logger="tkre.cluster.runtime"):
        runtime.init_ray(dashboard=True)
    assert fake_ray[-1]["include_dashboard"] is False
    assert 'pip install "ray[default]"' in caplog.text and "http://" not in caplog.text


def test_dashboard_only_for_local_sweeps(fake_ray, monkeypatch):
    _deps(monkeypatch, installed=True)
    runtime.init_ray(dashboard=False)  # generation, training, evaluation entry points
    runtime.init_ray("auto", dashboard=True)  # a cluster's dashboard is the cluster's
    assert [c.get("include_dashboard") for c in fake_ray] == [False, None]


def test_the_modules_checked_are_the_ones_rays_dashboard_imports():
    """Ray lists what its dashboard needs in ray/dashboard/optional_deps.py (read, not imported: the
    import fails where they are missing). A Ray release that adds one shows up here."""
    text = (Path(ray.__file__).parent / "dashboard" / "optional_deps.py").read_text()
    imported = {m.split(".")[0] for m in re.findall(r"^(?:import|from)\s+([\w.]+)", text, re.M)}
    assert imported and imported <= set(runtime.DASHBOARD_MODULES)
