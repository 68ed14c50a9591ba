"""The jobs a user or a rule runs, one module each, none importing another: invert, teacher,
distill, quantize. What two of them share lives beside them: train (optimiser, schedule,
evaluation) and probe (the verdict student)."""
