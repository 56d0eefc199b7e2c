"""What every test process needs before any test runs."""

import base64
import os
import signal
from typing import Any

import pytest

# A test command started in the background by a non-interactive shell (`./dev test &`, a CI
# runner's job) inherits SIGINT ignored, and so would every process a test starts and then
# interrupts to check its Ctrl-C (events --follow, op wait, a lab torn down on SIGINT): give
# SIGINT its handler back, so children start with it at its default.
signal.signal(signal.SIGINT, signal.default_int_handler)

# One cluster key for the whole test session (clustercore.secrets): a test's own Cluster on
# etcd and the manager processes it starts (which inherit the environment) seal and open
# fence passwords with the same key, as a cluster's managers share their key file.
if "CLUSTERCORE_SECRETS_KEY" not in os.environ and "CLUSTERCORE_SECRETS_KEY_FILE" not in os.environ:
    os.environ["CLUSTERCORE_SECRETS_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The project's real test guest (flavors.virt.guest), built once and cached beside the
    session's temporary directories: every lab test that boots a guest takes this one."""
    from flavors.virt.guest import build_guest

    return build_guest(tmp_path_factory.getbasetemp().parent / "clustercore-guest-cache")
