"""What is read and written: datasets (data), model checkpoints (models), pools of synthetic
images (pool), and atomic writes with their side files and path checks (io)."""
