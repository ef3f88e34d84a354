"""Stage 6, tools built on the entry points: the command line (`cli`, `demo`), the pytest
plugin (`pytest_plugin`), training-loop checks (`training`), gradient health (`health`) and
the ε sweep (`sweep`).
"""
