"""Framework integrations (PyTorch, Lightning, Keras, scikit-learn) built on the Checkpoint API.

Each integration lives in its own submodule and imports its framework only when that submodule is
imported, so ``import taskpoint.integrations`` stays cheap. A missing framework raises a
:class:`~taskpoint.errors.TaskpointError` naming the ``pip install`` to run.
"""
