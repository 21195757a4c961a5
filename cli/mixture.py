"""``winnow mixture CONFIG``: the OT mixture stage (sweep, pilots, predictor, selection)."""

from __future__ import annotations

from cli.run import stage_command

stage_command("mixture", "mixture", "YAML run config with a 'mixture' section",
              "Ingest the config's sources and run OT mixture estimation: OT sweep, pilots, predictor, selection.")
