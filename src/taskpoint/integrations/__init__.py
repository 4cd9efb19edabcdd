"""Framework integrations built on the public Checkpoint API, with one vocabulary.

``torch.TorchCheckpointer`` (and ``ResumableSampler``), ``lightning.LightningCheckpointer``,
``keras.KerasCheckpointer``, ``sklearn.fit_incremental`` / ``fit_warm_start``,
``spark.SparkStreamCheckpointer`` (and ``save_dataframe`` / ``restore_dataframe``) and
``flink.FlinkCheckpointer``. Each takes ``checkpoint: Checkpoint | None = None`` keyword-only
(default: the running task's, ``current_context().checkpoint``; outside a task it must be given),
a cadence ``every_n_steps`` where the framework counts steps, an integer or ``"auto"``
(``Checkpoint.due()`` decides, asked after every step; Flink: ``every_ms``, its own timer;
Spark saves every micro-batch), and reports ``resumed_step`` after restoring (``None`` when
nothing was).
What they share lives in the private ``_toolkit`` module (``_jvm_workdir``: the local work
directories of the JVM-backed ones; ``_lazy``: importing a framework, or naming its extra).

A framework that needs several modules is a subpackage (``torch/``, ``spark/``, ``flink/``,
``keras/``, ``sklearn/``: the public names in its ``__init__``, the rest in private modules);
``lightning`` is one module. Each imports its framework only when it is imported, so
``import taskpoint.integrations`` stays cheap. A missing framework raises a
:class:`~taskpoint.errors.TaskpointError` naming the ``pip install`` to run.
"""

from __future__ import annotations
