"""GlobeSumm (arXiv 2410.04087): multi-lingual, cross-lingual multi-source summarization.

`data` loads events in the GlobeSumm format; `summarization` scores one summary (ROUGE, conflict
and redundancy metrics); `mcms` runs the summarization pipelines over events and aggregates.
"""
