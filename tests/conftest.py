"""Shared settings for the ce_lib tests: a quick Hypothesis profile, the
devices to test on, and a recorder of the operations a call runs."""

import pytest
import torch
from hypothesis import settings
from torch.utils._python_dispatch import TorchDispatchMode

import ce_lib

# The whole suite has to run in well under 30 s on two cores: few examples,
# no deadline (the first call of a torch op can be slow).
settings.register_profile(
    "ce_lib", deadline=None, max_examples=30, derandomize=True, database=None
)
settings.load_profile("ce_lib")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The tests use small tensors, on which torch's intra-op threads only spin:
# one thread costs a fraction of the CPU time (make test runs these tests
# beside the chapters and the browser check).
torch.set_num_threads(1)

# The aten operations through which a tensor's value reaches the host
# (bool(t), float(t), t.item(), boolean-mask indexing, nonzero): on a GPU
# each one waits for the device.
HOST_SYNCS = {
    "aten._local_scalar_dense",
    "aten.is_nonzero",
    "aten.item",
    "aten.nonzero",
    "aten.masked_select",
}


class RecordOps(TorchDispatchMode):
    """Records the name of every aten operation run inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))

    def host_syncs(self) -> set[str]:
        return HOST_SYNCS.intersection(self.ops)


@pytest.fixture(autouse=True)
def validation_is_on_in_every_test():
    """Each test starts with validation on, and one that turns it off
    (even by a bare call) cannot leak that into the next."""
    assert ce_lib.validation.is_enabled()
    with ce_lib.validation(True):
        yield


def pytest_configure(config):
    # torch's first use of forward-mode AD scripts some decompositions with
    # torch.jit.script, which warns that it is deprecated: torch's noise
    config.addinivalue_line(
        "filterwarnings",
        "ignore:`torch.jit.script` is deprecated:DeprecationWarning",
    )
