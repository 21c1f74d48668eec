# mypy cannot see that batchledger.migrations is installed from the top-level migrations/
# folder (pyproject's package-dir; an editable install maps it with an import hook, which a
# static checker does not run), so this stub tells it: the module is that folder's code.
from migrations import *  # noqa: F403
