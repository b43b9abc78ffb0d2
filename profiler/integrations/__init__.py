"""Profile what a training script already has, without writing a Workload by hand.

- :mod:`batchprof.integrations.data`: ``workload_from_data(model, loader_or_dataset, loss)``
  (torch only);
- :mod:`batchprof.integrations.lightning`: ``profile_lightning(model, datamodule)`` and the
  ``BatchSizeProfiler`` callback, which set the recommended batch size the way Lightning's
  Tuner does (extra ``batchprof[lightning]``);
- :mod:`batchprof.integrations.hf`: ``profile_trainer(trainer)`` for a Hugging Face
  ``Trainer``, which sets ``args.per_device_train_batch_size`` (extra ``batchprof[hf]``).

Each is a thin layer over :func:`batchprof.profile`: it builds a Workload, profiles it, and
writes the batch size back. Importing this package imports neither Lightning nor transformers.
"""

from __future__ import annotations

from batchprof.integrations._deps import IntegrationError, MissingDependencyError

__all__ = ["IntegrationError", "MissingDependencyError"]
