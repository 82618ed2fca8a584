"""noex_lab: Erlang/OTP-style processes, supervisors and P2P clustering for Python and Jupyter."""

import gc
import logging
from typing import Any

# Importing the runtime builds ~60 dataclasses and hundreds of classes and functions, none of them
# garbage: cyclic collections during that import only cost CPU (~5 % of a `noex-lab node` start,
# issue 19 W10). Collection is paused for the import and restored as it was.
_gc_was_enabled = gc.isenabled()
gc.disable()
try:
    from .core import *  # noqa: F403
    from .core import __all__ as _core_all
    from .distribution import *  # noqa: F403
    from .distribution import __all__ as _distribution_all
    from .version import __version__
finally:
    if _gc_was_enabled:
        gc.enable()

# A library logs; the application decides where logs go (`noex-lab node` and the notebook
# extension do): without a handler of its own, nothing is printed through logging's last resort.
logging.getLogger("noex_lab").addHandler(logging.NullHandler())
__all__ = [*_core_all, *_distribution_all, "__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext noex_lab` (IPython is imported only here, never by `import noex_lab`)."""
    from .lab import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """`%unload_ext noex_lab`."""
    from .lab import unload_ipython_extension as unload

    unload(ip)
