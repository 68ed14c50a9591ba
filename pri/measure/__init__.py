"""What is measured: the analytic cost model (cost), fvcore's counts (flops), wall-clock timing
(timing) and the efficiency track's table that joins them (efficiency)."""
