"""The prepared format, read side (docs/DATA_FORMAT.md).

`info` (prepare_info.json), `manifest` (shard sizes, rows, SHA-256; `dora-hf verify-data`),
`shards` (the parquet shards of a folder or hub repo, their metadata columns and row groups),
`clip_index` (the one rule for where clips start and how many an epoch holds, used by both
readers and by every count), `clip_images` (a clip's stored JPEGs -> uint8 frames), the two
readers `random_access` (default) and `streaming`, and `batches` (what the training loop asks of
a reader, collation and the loader).
"""
