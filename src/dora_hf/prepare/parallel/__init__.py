"""`prepare-data --num-workers N`: one video's keyframe segments decoded in N processes.

`segments` finds where a video can be cut (keyframes no earlier packet is shown after),
`segment_decode` is what a worker runs, `segment_store` keeps finished segments so a rerun
decodes only what is missing, `pool` runs the workers and hands the frames back in order.
"""
