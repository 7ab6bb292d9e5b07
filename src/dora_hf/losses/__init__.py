"""Self-distillation losses: the shared base, DoRA's multi-object loss and DINO's multi-crop loss."""
