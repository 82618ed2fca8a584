"""noex_lab: Erlang/OTP-style processes, supervisors and P2P clustering for Python and Jupyter."""

from .core import *  # noqa: F403
from .core import __all__ as _core_all
from .distribution import *  # noqa: F403
from .distribution import __all__ as _distribution_all

__version__ = "0.1.0"
__all__ = [*_core_all, *_distribution_all, "__version__"]
