"""Launch recipes: `python -m launch.tpu` (Cloud TPU), `python -m launch.slurm` (multi-node GPU)."""
