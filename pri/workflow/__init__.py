"""The Snakemake side, the only part of pri the rules import: the config check (config), the
results layout (layout), the jobs a config runs (plan) and their resources (estimate)."""
