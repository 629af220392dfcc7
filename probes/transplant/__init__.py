"""XTransplant (arXiv 2502.12197): move one language's activations into another's forward pass.

`cases` builds the paired (source, target) prompts from task items; `runs` runs the shared-prefix
forks with the replacement hooks; `grid` sweeps source x target layers and scores them;
`strategy` chooses a layer pair from past grids (the paper's offline scaling strategy).
"""

from probes.transplant.grid import (
    MODES,
    SCORINGS,
    TransplantGrid,
    TransplantRun,
    control_partners,
    scaling_strategy,
    transplant,
    transplant_grid,
    upper_bound,
)

__all__ = ["MODES", "SCORINGS", "TransplantGrid", "TransplantRun", "control_partners", "scaling_strategy",
           "transplant", "transplant_grid", "upper_bound"]
