"""The paper's command lines: ``python -m train.fit`` (with its configuration, :mod:`train.fit_config`),
``python -m train.evaluate``, ``python -m train.finetune`` and ``python -m train.ablations``."""
