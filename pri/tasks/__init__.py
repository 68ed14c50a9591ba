"""The jobs a user or a rule runs, one module each, none importing another: invert, teacher,
distill, quantize. What they share lives beside them: train (optimiser, schedule, evaluation),
probe (the verdict student) and fakequant (the fake-quantised modules of quantize)."""
