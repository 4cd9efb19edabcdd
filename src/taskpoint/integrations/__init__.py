"""Framework integrations built on the public Checkpoint API, with one vocabulary.

``torch.TorchCheckpointer`` (and ``ResumableSampler``), ``lightning.LightningCheckpointer``,
``keras.KerasCheckpointer``, ``sklearn.fit_incremental`` / ``fit_warm_start``,
``spark.SparkStreamCheckpointer`` (and ``save_dataframe`` / ``restore_dataframe``) and
``flink.FlinkCheckpointer``. Each takes ``checkpoint: Checkpoint | None = None`` keyword-only
(default: the running task's, ``current_context().checkpoint``; outside a task it must be given),
a cadence ``every_n_steps`` where the framework counts steps (Flink: ``every_ms``; Spark saves
every micro-batch), and reports ``resumed_step`` after restoring (``None`` when nothing was).
What they share lives in the private ``_toolkit`` module.

Each integration lives in its own submodule and imports its framework only when that submodule is
imported, so ``import taskpoint.integrations`` stays cheap. A missing framework raises a
:class:`~taskpoint.errors.TaskpointError` naming the ``pip install`` to run.
"""
