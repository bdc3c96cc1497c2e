"""The scoring job: manifests, row keys, the pipeline, inference, output shards, reading results back, verify, windows, launch checks."""
