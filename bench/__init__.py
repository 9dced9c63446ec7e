"""Benchmarks of mpstudy: speed and memory claims live here, never in timed tests.

Run from the project checkout:

    python -m bench all                      # decomposition + inference + goals -> results/bench/*-<device>.{json,md}
    python -m bench decomposition --layers 2 # a quick look
    python -m bench inference --help
    python -m bench report results/bench/inference-cpu.json   # re-render a record's markdown

Every number is a ratio against a baseline measured in the same process (a TensorLy peer on the
same matrix, the dense model on the same batch), timed alternately so machine load hits both
alike, always by ``mpstudy.measure.time_interleaved`` (the library's one timing primitive: medians
over interleaved rounds, the torch thread count fixed and recorded). ``bench/perf.py`` holds the measurements; ``bench/__main__.py`` the command line. The
older single-purpose scripts (``svd_latency.py``, ``mpo_bench.py``, ``offline_compress.py``,
``prune_latency.py``) still run as scripts.
"""
