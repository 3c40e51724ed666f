"""The benchmark layer: the op suite (``bench.op_suite``: every op against eager and compiled PyTorch)
and the training-step suite (``bench.train_step``), timed by one harness (``op_suite``'s clock
and ``timing_summary``). Imports the core, never the other way round."""
