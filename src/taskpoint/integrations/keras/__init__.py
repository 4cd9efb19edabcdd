"""Keras 3: resume an interrupted ``model.fit`` mid-epoch, with the same result as an unbroken run.

```python
import os
os.environ.setdefault("KERAS_BACKEND", "torch")    # or "jax"; before keras is first imported
import keras
from taskpoint import task
from taskpoint.integrations.keras import KerasCheckpointer

@task(retries=3)
def train(epochs: int) -> float:
    keras.utils.set_random_seed(0)                   # same initial weights on every attempt
    model = build_and_compile_model()
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True,
                        callbacks=[KerasCheckpointer(every_n_steps=100)])
    return float(history.history["loss"][-1])
```

`KerasCheckpointer` saves the training state to the task's checkpoint
(``current_context().checkpoint``, or the `~taskpoint.Checkpoint` you pass) every
``every_n_steps`` trained batches, at the end of every epoch and at the end of training.
When ``fit`` starts and the checkpoint holds a state, the callback restores it and training
continues from the batch after the one saved, inside the interrupted epoch.

**What is resumed exactly** (bitwise, on CPU, when the uninterrupted run is itself deterministic):

- every model variable (``model.variables``: weights, non-trainable weights such as batch-norm
  statistics, and the layers' ``SeedGenerator`` states that seeded dropout draws from);
- every optimizer variable (iteration count, so learning-rate schedules continue; moments; ...);
- the epoch and the number of batches already trained in it; the metric accumulators of that epoch,
  so the resumed epoch reports the same ``loss``/metrics as an unbroken one;
- the global RNG states (Python ``random``, NumPy, torch CPU and CUDA where torch is loaded, and
  Keras' global ``SeedGenerator`` behind unseeded ``keras.random`` ops) both at the start of the
  interrupted epoch and at the saved batch. The epoch-start state is put back before the data
  pipeline draws its order, so Keras' own ``shuffle=True`` (a torch ``RandomSampler`` on the torch
  backend, ``np.random.permutation`` on JAX) yields the same permutation; the saved-batch state
  is put back when skipping ends, so unseeded dropout (torch's global generator) draws the same
  masks as an unbroken run.

**Backends.** torch (``pip install 'taskpoint[keras]'``; chosen when neither ``KERAS_BACKEND``
nor ``$KERAS_HOME/keras.json`` names a backend) and JAX (``pip install 'taskpoint[keras-jax]'``,
``KERAS_BACKEND=jax``). On JAX every random draw inside the jitted training step comes from a
layer's ``SeedGenerator`` whose state is a model variable, so it is restored with the weights; the
epoch's training state, which JAX's ``fit`` keeps outside the variables, is put back into them
before each save. A checkpoint written on one backend restores on the other for a model of the
same structure (the seed states' int32 on torch and uint32 on JAX hold the same bits); a model
that differs is refused with `CheckpointError` naming both backends. Training continued on the
other backend is not bitwise equal to either backend's unbroken run (other kernels, other
random streams). TensorFlow and Keras' other backends are refused (`TaskpointError`); so is a
missing backend package, at import, naming the backend, what chose it and what to install.

**How batches are skipped.** ``fit`` still iterates the interrupted epoch from its start, so the
batch order is reproduced by the same code that made it; for the batches already trained the
callback replaces the training step with a no-op (the data of those batches is loaded but not
trained on, and the optimizer does not step). Keras still calls every callback's
``on_train_batch_begin/end`` for them (with the restored metrics as logs); ``callback.skipping``
is true meanwhile and ``callback.skipped_batches`` counts them. Batch indices, ``steps`` and the
progress bar are those of an unbroken run.

**What is not resumed / requirements:**

- The input must give the same batches for epoch *e* whenever ``fit`` starts at epoch *e* with the
  same global RNG state: NumPy arrays and tensors (shuffled or not), a ``PyDataset`` whose batches
  depend only on the index (and the global RNGs), a generator recreated per ``fit``. A generator
  that is consumed across epochs (``steps_per_epoch`` with an endless iterator) or a
  ``PyDataset`` that keeps its own shuffling state is not reproduced.
- Model construction must be deterministic (seed it, e.g. ``keras.utils.set_random_seed``): the
  checkpoint restores variables into a model with the same variable list (checked by path, shape
  and dtype; a mismatch raises `CheckpointError`).
- State held outside Keras variables (Python attributes of your layers or callbacks, the state of
  other callbacks such as ``EarlyStopping``'s patience counter or ``ReduceLROnPlateau``'s
  counters, the ``History`` of earlier attempts) is not saved. Work done after the last save and
  before the failure is lost and redone.
- Bitwise equality is promised on CPU, with the same versions of the backend (torch, or jax and
  jaxlib) and the same XLA flags on every attempt: GPU kernels may be nondeterministic.
- On JAX, not covered: ``jax.random`` keys kept outside Keras variables (in Python attributes or
  closures of your code); a change of ``jax.config`` (the PRNG implementation, x64) between
  attempts. Keras itself refuses unseeded ``keras.random`` ops inside JAX's jitted step.
- ``steps_per_execution`` must be 1 (the callback counts, saves and skips batch by batch).
- One checkpoint scope holds one ``fit``: a second ``fit`` with a callback on the same scope would
  resume from the first one's final state. Use a separate scope (``checkpoint=``) for each. A
  ``fit`` that ended (all epochs, or stopped early by a callback) is not trained again when the
  task is retried with the same ``epochs``; with more ``epochs`` it continues after the last
  completed epoch.
"""

from __future__ import annotations

from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations.keras.checkpointer import KerasCheckpointer

__all__ = ["KerasCheckpointer"]

kit.publish(__name__, KerasCheckpointer)
