"""pytest setup for the whole repository.

Loads ``tools/nbval_figures.py``, which makes nbval compare every stored
figure of a chapter with the re-executed one (see its docstring).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))

pytest_plugins = ["nbval_figures"]
