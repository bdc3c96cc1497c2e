"""What flows through decoding: bytes -> frames -> the model's input tensors (decode, recipe, flow, the decode pool)."""
