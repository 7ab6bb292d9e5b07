"""From a checkpoint to what others load: `export` (and its `export_formats`: plain ViT, timm),
`convert` (reference .pth checkpoints), `cards` (model cards), `push` (to the Hugging Face Hub)."""
