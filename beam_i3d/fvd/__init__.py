"""The Frechet Video Distance: clips, features, mergeable statistics, the distance, `beam-i3d fvd`."""
