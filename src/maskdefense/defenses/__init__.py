"""Defenses: ``nn.Module`` wrappers that take ``[0, 1]`` images and return logits.

* :mod:`maskdefense.defenses.base` -- the interface (``Defense``, its declared ``Contract``, ``NoDefense``, ``ABSTAIN``/``REJECT``);
* :mod:`maskdefense.defenses.mad` -- MAD's grid masking and majority vote (``MADClassifier``);
* :mod:`maskdefense.defenses.unmask` -- detection and defense by the parts an image shows (``UNMASK``);
* :mod:`maskdefense.defenses.smoothing` -- randomized smoothing and Denoised Smoothing (``Smoothing``: vote with
  abstention, certified L2 radius);
* :mod:`maskdefense.defenses.registry` -- ``DEFENSES``, ``create_defense("mad:cell=7,rate=0.75", model)``,
  ``list_defenses()``.
"""
