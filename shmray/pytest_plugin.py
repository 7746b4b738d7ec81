"""shmray's pytest plugin (registered by the package; inert until asked): with
``pytest --shmray`` a project's existing Ray tests run on shmray, their `import ray`
answered by shmray (see _ray_alias); the fixtures give a session to tests written for
shmray:

    shmray_session        a session shared by the tests of a module (num_cpus: the CPUs)
    shmray_test_session   a session of the test's own, shut down after it

Without the entry point (PYTEST_DISABLE_PLUGIN_AUTOLOAD), load it with
``-p shmray.pytest_plugin``. Nothing of shmray is imported until it is asked for.
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.getgroup("shmray").addoption(
        "--shmray", action="store_true",
        help="run the tests' `import ray` on shmray (Ray modules shmray lacks fail to import)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    if getattr(early_config.known_args_namespace, "shmray", False):  # before conftest.py
        _as_ray()                                                     # files import ray


def pytest_configure(config):
    if config.getoption("shmray"):
        _as_ray()


def _as_ray():
    from shmray import _ray_alias

    _ray_alias.install()


@pytest.fixture(scope="module")
def shmray_session():
    import shmray

    shmray.init(ignore_reinit_error=True)
    yield shmray
    shmray.shutdown()


@pytest.fixture
def shmray_test_session():
    import shmray

    if shmray.is_initialized():
        shmray.shutdown()
    shmray.init()
    yield shmray
    shmray.shutdown()
