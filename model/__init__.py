"""The I3D network in TensorFlow 2, its weights, label maps and SavedModel export."""
