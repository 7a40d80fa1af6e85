"""Training with graph distillation (torch): readers, prep cache, networks, trainer, CLIs."""
