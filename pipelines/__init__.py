"""pipelines package: the code location (definitions), partitions, jobs, schedules, demo.

Dagster flags a few APIs this platform relies on on purpose (backfill policies, per-partition
check specs) as beta/preview; their warnings would drown the UI log and the demo output.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
