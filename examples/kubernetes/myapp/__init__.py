"""The example application of ``examples/kubernetes``: see ``tree.py``."""
