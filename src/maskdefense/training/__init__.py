"""Training: the trainer (:mod:`.loop`), its settings (:mod:`.config`), training tasks (:mod:`.tasks`),
batch transforms and augmentation (:mod:`.transforms`), post-step hooks (:mod:`.hooks`) and named
presets (:mod:`.presets`)."""
