"""maskdefense: mask-based adversarial defenses for image classifiers, and honest evaluation of them.

Conventions (defined once, here and in the modules named):

* images are float32 tensors ``(N, C, H, W)`` in ``[0, 1]``; normalization lives inside the models
  (:mod:`maskdefense.validation`);
* a mask is 1 where a pixel is **kept** and 0 where it is removed (:mod:`maskdefense.ops.masking`);
* a defense is an ``nn.Module`` returning logits; a randomized defense returns the log of its mean
  softmax (:mod:`maskdefense.defenses.base`);
* randomness comes from an explicit ``torch.Generator`` (:mod:`maskdefense.seeding`).
"""

__version__ = "0.1.0"
