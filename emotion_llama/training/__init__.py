"""Training: the Lightning module and data module, and ``train(cfg)`` for one coarse or fine stage."""
