import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CI box has 2 shared cores: one torch thread is ~10× faster than two under load."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
