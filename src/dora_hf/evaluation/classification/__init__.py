"""Image classification on frozen features: DINO's k-NN and linear evaluations.

`image_dataset` (a Hugging Face image split), `features` (extracted once and cached), `knn`,
`linear_probe`; the commands are `dora-hf eval knn` and `dora-hf eval linear`.
"""
