"""Folders dora-hf writes: output-folder claims and markers, staged writes (temporary name, then
rename), and the layout of a training checkpoint, read by training and by publishing alike."""
