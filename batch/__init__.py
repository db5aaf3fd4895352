"""Batch scoring: a table of texts (Parquet or CSV files, a folder or a glob of them) scored by
one pinned model version into a Parquet file. Depends on the shared core only."""
