"""winnow flows: Prefect flows that orchestrate tasks/ and hand results to storage/.

Importing the package first fills in Prefect environment defaults (flows/_env.py), before any
flow module imports Prefect.
"""

import flows._env  # noqa: F401
