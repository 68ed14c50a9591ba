"""The method itself, readable on its own: the sparse ViT forward (vit), the schedules and the
method vocabulary (schedules), the inversion loop (engine) and what a job shares at run time
(runtime). It imports nothing from the rest of pri but the errors and the value checks."""
