"""tests/attacks: APGD, PGD, FGSM-RS against the reference attacks and their contracts."""
