"""Attack implementations by library: Foolbox, AutoAttack, and ours (MI-FGSM / diverse input)."""
