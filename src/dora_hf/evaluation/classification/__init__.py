"""Image classification on frozen features: DINO's k-NN and linear evaluations.

`image_dataset` (a Hugging Face image split), `features` (extracted once and cached), `knn`,
`linear_probe` (`eval linear --protocol fast`), and DINO's online linear evaluation
(`eval linear --protocol dino`, the default): `dino_linear`, its transforms `dino_transforms`
and its image batches `transformed_images`. The commands are `dora-hf eval knn` and
`dora-hf eval linear` (`command`).
"""
